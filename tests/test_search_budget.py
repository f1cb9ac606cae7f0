"""7_search.py --minutes: the budget's arithmetic checked by hand, and whole searches run on a fake
clock (training replaced by a stand-in that advances it) that end within the minutes asked."""
import pytest

from toolkit import search, search_storage, training
from toolkit.search_budget import Budget, Costs, Measured


def test_the_confirmation_gets_the_seeds_that_fit_in_its_share_and_the_search_stops_before_it():
    budget = Budget(start=1000.0, minutes=20)  # 1200 s; the confirmation may take 600 of them
    runs = [30.0, 30.0, 30.0, 30.0]  # three finalists and ERM: 120 s a seed
    assert budget.seeds_that_fit(runs, 7) == 5  # 7 seeds need 840 s
    assert budget.confirmation(runs, 5) == 600.0
    assert budget.search_ends(600.0) == 1600.0
    assert budget.may_start(1570.0, 30.0, 600.0) and not budget.may_start(1571.0, 30.0, 600.0)
    assert budget.expected_trials(1000.0, 0, 30.0, 600.0) == 20
    assert Budget(1000.0, 20, workers=2).seeds_that_fit(runs, 7) == 7  # two processes share the runs out
    small = Budget(1000.0, minutes=5)  # 150 s for the confirmation: one seed, fewer than MIN_SEEDS
    assert small.seeds_that_fit(runs, 7) == 0
    assert small.minutes_for(runs, 7, 10, 30.0) == 28  # 840 s of confirmation at most half: 1680 s
    assert Budget(1000.0, None).seeds_that_fit(runs, 7) == 7  # --trials: no budget
    # while searching, time is kept for MIN_SEEDS at least once a confirmation was planned: a dear finalist
    # arriving late does not drop it
    assert budget.reserved_seeds([100.0] * 4, 7) == 3 and budget.reserved_seeds(runs, 7) == 5


def test_a_run_costs_its_setup_and_its_epochs_with_sams_second_pass():
    plain, sam = Measured(2.0, 1.0, 12.0, False), Measured(2.0, 2.2, 7.0, True)
    costs = Costs((plain, sam), epochs=10)
    assert sam.plain_epoch == pytest.approx(1.1) and sam.run(10) == pytest.approx(24.0)
    assert costs.plain_run() == pytest.approx(2.0 + 10 * 1.05)  # medians of setup and plain epoch
    assert costs.longest_run(sam=False) == pytest.approx(24.0)  # the SAM trial measured is the dearest
    assert Costs((plain,), 10).longest_run(sam=True) == pytest.approx(22.0)  # SAM drawable: 2 x the epochs
    assert costs.mean_trial() == pytest.approx(9.5)


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


EPOCH_SECONDS = {"ERM": 1.0, "LA": 1.5, "CB": 1.2, "FL": 1.3, "CCE": 1.0, "GHMC": 1.4, "LDAM": 1.3}
SETUP_SECONDS = 2.0


def fake_training(clock, tmp_path):
    """training.start's stand-in: a run of the recipe's epoch cost (SAM's doubled) on the fake clock."""
    made = []

    def start(args, after_epoch=None):
        run_dir = tmp_path / "runs" / f"run{len(made)}"
        run_dir.mkdir(parents=True)
        made.append(run_dir)
        value = 50.0 + (10.0 if args.objective == "LA" else 0.0) + 1000 * args.weight_decay
        clock.now += SETUP_SECONDS
        after_epoch(run_dir, 0, None, {"value": -1.0, "epoch": 0})
        for epoch in range(1, args.epochs + 1):
            clock.now += EPOCH_SECONDS[args.objective] * (2 if args.sam else 1)
            if after_epoch(run_dir, epoch, {}, {"value": value, "epoch": epoch}):
                break
        return training.Trained(0, run_dir, {"value": value, "epoch": args.epochs})
    return start


def fake_search(tmp_path, monkeypatch, minutes: float, recipes=("ERM", "LA"), finalists=2) -> tuple:
    """(the lines said, the fake seconds taken, the search study, the confirmation's seeds)."""
    clock = FakeClock()
    monkeypatch.setattr(search.training, "start", fake_training(clock, tmp_path))
    monkeypatch.setattr(search.evaluation, "test_run", lambda run_dir, **options: {"bacc": 50.0})
    settings = search_storage.Settings(
        storage=str(tmp_path / "study.journal"), study="recipe-search", search_dir=str(tmp_path),
        train_argv=["--model_index", "41", "--dataset", "x", "--epochs", "10", "--no-progress"], recipes=list(recipes),
        fixed=[], dataset="x", epochs=10, seed=0, trials=None, minutes=minutes, seeds=[1, 2, 3, 4, 5, 6, 7],
        finalists=finalists, pruner="none", min_resource=5, reduction_factor=3, heartbeat=30, search_seed=0, grid=None)
    storage, _ = search_storage.open_study(settings, create=True)
    started = clock()
    search_storage.create_study(settings, storage, started=started)
    said = []
    search.work(settings, say=said.append, clock=clock)
    study = search_storage.load(settings, settings.study)
    _, _, seeds = search.confirmation_runs(settings)
    return said, clock.now - started, study, seeds


def test_a_search_on_a_fake_clock_ends_within_its_minutes(tmp_path, monkeypatch):
    said, seconds, study, seeds = fake_search(tmp_path, monkeypatch, minutes=10)
    assert 0.85 * 600 <= seconds <= 600, said  # the whole answer, search and confirmation, in about M
    # trial 0 drew LA (1.5 s an epoch); the plan counts a finalist not known yet as a SAM run, 2 + 30 s
    assert said[0].startswith("plan: a run of 10 epochs takes ~17 s (2 s to start, 1.5 s an epoch); ~")
    assert " trials of a whole run (more, as weak ones are pruned early), the search until ~" in said[0]  # not N
    assert "then the confirmation: 2 finalists and ERM on 3 seeds (9 runs)" in said[0]
    trials = len(study.trials)
    assert said[1].startswith("trial 1 of ~") and said[trials].startswith(f"trial {trials} of ~")
    assert all(line.endswith(" min left") for line in said[1:trials + 1] + said[trials + 2:])
    # the confirmation takes the seeds that fit in the time the search left: the finalists' own costs
    shown = " ".join(map(str, seeds))
    assert 3 <= len(seeds) <= 7 and said[trials + 1].startswith(f"confirmation: 2 finalists and ERM on seeds {shown} "
                                                                f"({3 * len(seeds)} runs")
    assert said[-1].startswith(f"confirmation run {3 * len(seeds)} of {3 * len(seeds)}: ")
    assert any(t.params.get("sam") for t in study.trials)  # enough trials fit: SAM drawn, its cost counted


def test_a_small_budget_leaves_the_costly_knobs_out_and_cuts_the_seeds(tmp_path, monkeypatch):
    said, seconds, study, seeds = fake_search(tmp_path, monkeypatch, minutes=6,
                                              recipes=("ERM", "LA", "CB", "FL", "CCE", "GHMC", "LDAM"))
    assert seconds <= 360, said
    assert 3 <= len(seeds) < 7 and "7 seeds do not fit in --minutes 6, 3 do" in said[0], said
    assert "SAM and mixup left out" in said[0]
    assert not any("sam" in t.params or "mixup" in t.params for t in study.trials)


def test_a_budget_too_small_for_a_confirmation_says_what_would_do(tmp_path, monkeypatch):
    said, seconds, study, seeds = fake_search(tmp_path, monkeypatch, minutes=1.5)
    assert seeds == [] and seconds <= 90, said
    assert "no confirmation: --minutes 1.5 is too small" in said[0] and "would give ~10 trials and 7 seeds" in said[0]
