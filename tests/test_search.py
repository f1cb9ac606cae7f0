"""7_search.py: the space, the pruning guard, the selection that never reads a test label, the
finalists' seeds, several processes on one study (journal file and PostgreSQL), kill -9 and resume."""
import glob
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import REPO, TEST_OUTPUTS, TRAIN_ARGS

from toolkit import plan, runs, search, search_report, search_space, search_storage
from toolkit.space import Integer, LogUniform, Uniform

SEARCH_ARGS = ["--objectives", "ERM", "LA", "--search-only", "weight_decay", "la_tau"]


def search_args(tiny, *extra, epochs=2):
    args = [str(a) for a in TRAIN_ARGS + tiny.data_args]
    args[args.index("--epochs") + 1] = str(epochs)
    return args + SEARCH_ARGS + [str(a) for a in extra]


def search_dirs(logs: Path) -> list:
    return sorted((logs / "search" / "tiny").iterdir()) if (logs / "search" / "tiny").is_dir() else []


RUNS = "search/tiny/*/runs/ResNet20/tiny/*/*"  # a search's runs live in its own folder


def run_dirs(logs: Path) -> list:
    return sorted(p.parent for p in logs.glob(f"{RUNS}/args.json"))


def journal_trials(path: Path, name="recipe-search") -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def finished(trials) -> list:
    return [t for t in trials if t.state in search.FINISHED]


# ---------------------------------------------------------------- the space

def test_each_recipe_draws_the_shared_knobs_its_own_and_mixup_only_where_mixed_batches_are_scored():
    dests = {recipe: [h.dest for h in search_space.recipe_knobs(recipe)] for recipe in ("ERM", "LA", "LDAM-DRW", "SPBL")}
    assert dests["ERM"] == ["lr", "weight_decay", "sampler", "sam", "mixup"]
    assert dests["LA"] == ["lr", "weight_decay", "sampler", "sam", "la_tau", "mixup"]
    assert dests["LDAM-DRW"] == ["lr", "weight_decay", "sampler", "sam", "ldam_max_m", "ldam_s", "drw_share", "mixup"]
    assert dests["SPBL"] == ["lr", "weight_decay", "sampler", "sam", "spbl_max_weight", "spbl_resample"]  # no mixup
    assert [h.dest for h in search_space.recipe_knobs("LA", {"lr", "mixup"})] == ["weight_decay", "sampler", "sam", "la_tau"]
    for recipe in (*search_space.DEFAULT_RECIPES, "ERM-DRW"):
        for knob in search_space.recipe_knobs(recipe):
            assert knob.search.holds(knob.default), (recipe, knob.flag)


def test_a_drawn_recipe_is_an_ordinary_training_plan():
    params = {"recipe": "LDAM-DRW", "weight_decay": 0.001, "ldam_max_m": 0.3, "drw_share": 0.8, "mixup": None}
    argv = search_space.recipe_argv("LDAM-DRW", params, 200)
    assert argv == ["--objective", "LDAM", "--weight-decay", "0.001", "--ldam-max-m", "0.3", "--drw", "161"]
    args = plan.parse_args(["--model_index", "41", "--dataset", "x", "--epochs", "200", *argv])
    assert (args.objective, args.drw, args.weight_decay, args.ldam_max_m, args.mixup) == ("LDAM", 161, 0.001, 0.3, None)
    assert search_space.recipe_argv("SPBL", {"spbl_resample": False}, 10) == ["--objective", "SPBL", "--no-spbl-resample"]
    assert search_space.late_change(args) == 161
    shared = ["--epochs", "3", "--la-tau", "1.5", "--no-spbl-resample", "--drw", "2"]
    assert search_space.for_objective(shared, "CCE") == ["--epochs", "3"]
    assert search_space.for_objective(shared, "SPBL") == ["--epochs", "3", "--no-spbl-resample"]
    assert search_space.for_objective(shared, "ERM") == ["--epochs", "3", "--drw", "2"]
    spbl = plan.parse_args(["--model_index", "41", "--dataset", "x", "--epochs", "30", "--objective", "SPBL"])
    assert search_space.late_change(spbl) == 26  # 6 stages of 5 epochs: the last begins at epoch 26
    plain = plan.parse_args(["--model_index", "41", "--dataset", "x", "--epochs", "30", "--objective", "LA"])
    assert search_space.late_change(plain) == 0  # the protocol's default: no stage of its own


def test_grid_values_spread_over_each_range_on_its_scale():
    assert search_space.grid_values(LogUniform(1e-5, 1e-2), 4) == [1e-5, 1e-4, 1e-3, 1e-2]
    assert search_space.grid_values(Uniform(0.0, 2.5), 3) == [0.0, 1.25, 2.5]
    assert search_space.grid_values(Integer(5, 50), 3) == [5, 28, 50]  # 27.5 rounds to even
    combos = search_space.grid(["ERM", "LA"], {"lr", "sampler", "sam", "mixup"}, 2)
    assert len(combos) == 2 + 2 * 2 and combos[0] == {"recipe": "ERM", "weight_decay": 1e-5}


def test_space_prints_every_recipe_and_its_ranges(run):
    code, out, err = run("7_search", "--space", "--objectives", "LA", "LDAM-DRW", "--lr", "0.05")
    assert code == 0, err
    assert "--la-tau        uniform [0, 2.5]  (default 1.0)" in out
    assert "--drw-share" in out and "--ldam-s" in out and "\n  --lr" not in out
    assert out.strip().endswith("fixed, not searched: lr")


# ---------------------------------------------------------------- pruning

def test_the_guard_never_prunes_before_a_late_change_has_settled():
    pruner = search_space.build_pruner("halving", 1, 2, 10)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in (50.0, 60.0):  # two strong trials that reached every rung
        trial = study.ask()
        for epoch in range(1, 11):
            trial.report(value, epoch)
            trial.should_prune()
        study.tell(trial, value)
    late = study.ask()
    late.set_user_attr("settles_at", 8)  # e.g. --drw 6 + SETTLE_EPOCHS
    for epoch in range(1, 8):
        late.report(10.0, epoch)  # poor until its re-weighting starts
        assert not late.should_prune(), epoch
    late.report(10.0, 8)
    assert late.should_prune()  # judged once settled, and still poor
    unguarded = optuna.create_study(direction="maximize", pruner=search_space.build_pruner("unguarded", 1, 2, 10))
    for trial in study.trials[:2]:
        unguarded.add_trial(trial)
    early = unguarded.ask()
    early.report(10.0, 1)
    assert early.should_prune()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("extra, fragment", [
    (["--objectives", "ERM", "NOPE"], "unknown recipe 'NOPE'"),
    (["--objectives", "CCE-DRW"], "CCE does not take --drw"),
    (["--objectives", "ERM", "--la-tau", "1.5"], "no objective of --objectives ERM takes --la-tau"),
    (["--trials", "0"], "--trials: must be a positive integer"),
    (["--seeds", "0", "1"], "--seeds must be fresh"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open --storage"),
    (["--storage", "/no/such/folder/study.journal"], "no folder /no/such/folder"),
    (["--objective", "LA"], "--objective is not for 7_search.py"),
    (["--objectives", "ERM", "GHMC", "--mixup", "0.2"], "--mixup cannot train GHMC"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny, run, extra, fragment):
    code, out, err = run("7_search", *search_args(tiny), *extra)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not tiny.logs.exists()


def test_a_dataset_without_a_valid_split_is_refused(tiny, run):
    shutil.rmtree(tiny.data / "tiny" / "valid")
    code, _, err = run("7_search", *search_args(tiny))
    assert code == 2 and "valid" in err and err.count("\n") == 1, err
    assert not tiny.logs.exists()


def test_a_storage_holding_another_datasets_study_is_refused(tiny, run, tmp_path):
    journal = tmp_path / "other.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(study_name="recipe-search", storage=storage).set_user_attr("dataset", "cifar")
    before = journal.read_bytes()
    code, _, err = run("7_search", *search_args(tiny), "--storage", journal)
    assert code == 2 and "of dataset 'cifar', not 'tiny'" in err, err
    assert journal.read_bytes() == before and not tiny.logs.exists()


# ---------------------------------------------------------------- selection and confirmation

def permute_test_labels(dataset: Path):
    """Move every test image into the next class's folder: the test labels change, nothing else."""
    test = dataset / "test"
    classes = sorted(p.name for p in test.iterdir())
    moved = {c: sorted((test / c).iterdir()) for c in classes}
    for i, c in enumerate(classes):
        target = test / classes[(i + 1) % len(classes)]
        for image in moved[c]:
            image.rename(target / f"moved-{c}-{image.name}")


def test_selection_never_reads_a_test_label_and_the_finalists_train_on_fresh_seeds(tiny, run, tmp_path):
    args = search_args(tiny, "--trials", 2, "--finalists", 1, "--seeds", 1, 2, "--deterministic", "--pruner", "none")
    answers = []
    for attempt in range(2):
        if attempt:
            permute_test_labels(tiny.data / "tiny")
        code, out, err = run("7_search", *args)
        assert code == 0 and err == "", err
        folder = search_dirs(tiny.logs)[-1]
        assert_quiet(out, folder)
        trials = pd.read_csv(folder / "trials.csv")
        finalists = pd.read_csv(folder / "finalists.csv")
        recipes = pd.read_csv(folder / "recipes.csv")
        answers.append((trials, finalists, recipes, out))
        if not attempt:
            assert_tested_as_2_test_does(run, Path(finalists["run_dirs"][0].split()[0]), tmp_path / "tested-alone")
    (trials_a, finalists_a, recipes_a, out_a), (trials_b, finalists_b, recipes_b, out_b) = answers
    # the search and the choice are the same whatever the test labels
    columns = ["number", "state", "objective", "weight_decay", "la_tau", "value"]
    pd.testing.assert_frame_equal(trials_a[columns], trials_b[columns])
    chosen = ["rank", "trial", "recipe", "search_valid", "seeds", "confirm_valid_mean"]
    pd.testing.assert_frame_equal(finalists_a[chosen], finalists_b[chosen])
    assert out_a.splitlines()[-2].split(":")[0] == out_b.splitlines()[-2].split(":")[0]  # the same winner
    assert list(recipes_a["test_bacc_mean"]) != list(recipes_b["test_bacc_mean"])  # the test split did change
    # one finalist and ERM, each on the two fresh seeds, never on the search's seed 0
    assert list(finalists_a["rank"]) == ["1", "baseline"] and list(finalists_a["seeds"]) == ["1 2", "1 2"]
    confirmation = [d for folder in finalists_a["run_dirs"] for d in folder.split()]
    assert sorted(json.loads((Path(d) / "args.json").read_text())["seed"] for d in confirmation) == [1, 1, 2, 2]
    assert all((Path(d) / "test_metrics.csv").exists() for d in confirmation)
    searched = [Path(d) for d in trials_a["run_dir"]]
    assert all(json.loads((d / "args.json").read_text())["seed"] == 0 for d in searched)
    assert not any((d / "test_metrics.csv").exists() for d in searched)  # the search never tests
    page = (search_dirs(tiny.logs)[-1] / "report.html").read_text()
    first_line = out_a.splitlines()[-2]
    assert page.startswith("<!DOCTYPE html>") and html.escape(first_line) in page and "<script" not in page
    assert "trials drew LA (2)" in out_a or "trials drew ERM (2)" in out_a or "trials drew LA (1), ERM (1)" in out_a \
        or "trials drew ERM (1), LA (1)" in out_a
    assert "No parameter importances: 2 complete trials" in page  # fewer than 10: none shown
    # the worst class's recall, as the runs' per_class.csv give it, and the mark of a class left at zero
    for _, row in finalists_a.iterrows():
        recalls = [pd.read_csv(Path(d) / "per_class.csv")["recall"].min() for d in row["run_dirs"].split()]
        assert row["worst_class_recall"] == pytest.approx(min(recalls))
        assert (row["note"] == row["note"] and "zero recall" in row["note"]) == (min(recalls) == 0)


def assert_tested_as_2_test_does(run, run_dir: Path, copy: Path):
    """A confirmation run holds the files `2_test.py --run` writes into a copy of it, byte for byte."""
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(*TEST_OUTPUTS))
    code, _, err = run("2_test", "--run", copy)
    assert code == 0, err
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in copy.iterdir())
    for name in ("test_metrics.csv", "per_class.csv", "predictions.csv", "test_settings.json"):
        assert (run_dir / name).read_bytes() == (copy / name).read_bytes(), name


def assert_quiet(out: str, folder: Path):
    """The search's own lines only: Optuna's log lines and warnings, and the trials' training lines,
    went to files in the search folder."""
    assert "[I " not in out and "Warning" not in out and "Trial 0 finished" not in out and "device " not in out
    assert "Trial 0 finished" in (folder / "optuna.log").read_text()
    assert "run directory: " in (folder / "training.log").read_text()
    assert "trial 1 of " in out and "confirmation run 1 of " in out


def test_an_older_searchs_settings_still_resume_with_their_runs_where_they_are(tmp_path):
    """search.json written before the search folder held its runs: no runs_root, so its trials and
    confirmation runs (and their retries) keep going to the logs root the search was given."""
    settings = search_storage.Settings(
        storage=str(tmp_path / "study.journal"), study="recipe-search", search_dir=str(tmp_path),
        train_argv=["--logs-root", "old-logs"], recipes=["LA"], fixed=[], dataset="x", epochs=4, seed=0, trials=2,
        minutes=None, seeds=[1, 2, 3], finalists=1, pruner="none", min_resource=2, reduction_factor=3, heartbeat=30,
        search_seed=0, grid=None)
    stored = {k: v for k, v in vars(settings).items() if k not in ("runs_root", "jobs")}
    (tmp_path / "search.json").write_text(json.dumps(stored))
    read = search_storage.Settings.read(tmp_path)
    assert (read.runs_root, read.jobs) == ("", 1)
    assert search.run_argv(read, "LA", {"la_tau": 0.5}, 1) == ["--logs-root", "old-logs", "--objective", "LA",
                                                               "--la-tau", "0.5", "--seed", "1"]
    read.runs_root = str(tmp_path / "runs")
    assert search.run_argv(read, "LA", {}, 1)[-2:] == ["--logs-root", str(tmp_path / "runs")]


def files_outside_searches(logs: Path) -> dict:
    return {p.relative_to(logs): p.read_bytes() for p in logs.rglob("*")
            if p.is_file() and not p.is_relative_to(logs / "search")}


def test_a_searchs_runs_stay_in_its_folder_and_report_there(tiny, run):
    code, _, err = run("1_train", *[str(a) for a in TRAIN_ARGS + tiny.data_args], "--objective", "ERM")
    assert code == 0, err
    users = files_outside_searches(tiny.logs)
    code, _, err = run("7_search", *search_args(tiny, "--trials", 1, "--finalists", 1, "--seeds", 1, "--pruner",
                                                "none", epochs=1))
    assert code == 0, err
    assert files_outside_searches(tiny.logs) == users  # the user's logs/ exactly as they were
    folder = search_dirs(tiny.logs)[-1]
    assert len(run_dirs(tiny.logs)) == 3  # the trial, the finalist and ERM on seed 1, all in the search's folder
    assert sorted(runs.list_runs(folder / "runs")) == run_dirs(tiny.logs)
    code, out, err = run("4_report", folder / "runs")
    assert code == 0 and "ERM" in out, err
    user_run, = {p.parent for p in users if p.name == "args.json"}
    assert runs.list_runs(tiny.logs) == [tiny.logs / user_run]  # the logs root's report: the user's run only


def test_the_winner_is_chosen_on_validation_not_on_test():
    entries = [{"trial": 4, "confirm_valid": 80.0, "label": "LA"}, {"trial": 2, "confirm_valid": 82.0, "label": "CB"},
               {"trial": None, "confirm_valid": 90.0, "label": "ERM (nothing searched)"}]
    assert search_report.winner(entries)["label"] == "CB"


def test_a_finalist_that_leaves_a_class_at_zero_recall_is_never_the_winner():
    entries = [{"trial": 4, "confirm_valid": 80.0, "label": "LA", "zero_recall_seeds": 0, "worst_recall": 12.5,
                "recipe_label": "LA"},
               {"trial": 2, "confirm_valid": 95.0, "label": "CB", "zero_recall_seeds": 1, "worst_recall": 0.0,
                "recipe_label": "CB"},
               {"trial": None, "confirm_valid": 90.0, "label": "ERM (nothing searched)", "zero_recall_seeds": 0}]
    assert search_report.winner(entries)["label"] == "LA"  # CB is best on validation, but a class never predicted
    table = pd.DataFrame([{"recipe": "LA", "test_bacc_mean": 70.0, "test_bacc_ci_low": 60.0, "test_bacc_ci_high": 80.0,
                           "bacc_diff_mean": 1.0, "bacc_diff_ci_low": -2.0, "bacc_diff_ci_high": 4.0, "p_holm": 0.4,
                           "matched_seeds": "1 2 3"}])
    said = search_report.answer(entries, table, "bacc")
    assert said.startswith("no recipe beats ERM beyond noise; the best by valid bacc on the confirmation seeds: LA: ")
    assert "worst class recall 12.5 (lowest over the seeds)" in said and "left out for a class at zero recall: CB" in said
    entries[0]["zero_recall_seeds"] = 2
    assert search_report.winner(entries) is None
    assert search_report.answer(entries, table, "bacc").startswith("no finalist keeps every class above zero recall")


def test_the_worst_class_recall_is_read_from_test_metrics_or_per_class(tmp_path):
    pd.DataFrame([{"split": "test", "bacc": 60.0}]).to_csv(tmp_path / "test_metrics.csv", index=False)
    pd.DataFrame({"class": ["0", "1", "2"], "support": [5, 0, 3], "recall": [80.0, 0.0, 33.3]}).to_csv(
        tmp_path / "per_class.csv", index=False)
    assert search_report.worst_recall(tmp_path) == 33.3  # class 1 is not in the test split: no recall to judge
    pd.DataFrame([{"split": "test", "bacc": 60.0, "min_recall": 25.0}]).to_csv(tmp_path / "test_metrics.csv",
                                                                                index=False)
    assert search_report.worst_recall(tmp_path) == 25.0  # 2_test.py's own figure where it wrote one


# ---------------------------------------------------------------- several processes, kill and resume

def command(tiny, *extra, epochs=2) -> list:
    return [sys.executable, str(REPO / "7_search.py"), *search_args(tiny, *extra, epochs=epochs)]


def quiet_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_together(commands: list, timeout=240):
    processes = [subprocess.Popen(c, cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for c in commands]
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out
    return outputs


def assert_accounted_for(trials, logs: Path, count: int):
    """The count asked, none lost, none run twice: every finished trial one run directory of its own,
    and no run directory that is not a finished trial's."""
    done = finished(trials)
    assert len(done) == count, [(t.number, t.state.name) for t in trials]
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == count
    assert sorted(map(str, run_dirs(logs))) == sorted(dirs)
    others = [t for t in trials if t not in done]
    assert all(t.state == optuna.trial.TrialState.FAIL and "run_dir" not in t.user_attrs for t in others)


def test_two_worker_processes_on_one_journal_file_run_the_count_asked(tiny, tmp_path):
    journal = tmp_path / "study.journal"
    out, = run_together([command(tiny, "--trials", 6, "--finalists", 0, "--storage", journal, "--jobs", 2)])
    assert "worker 0:" in out and "worker 1:" in out  # --jobs 2: two processes took trials
    assert_accounted_for(journal_trials(journal), tiny.logs, 6)
    assert len(search_dirs(tiny.logs)) == 1


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill -9", "Ctrl-C"])
def test_a_stopped_search_resumes_the_study_and_the_stopped_run(tiny, stop):
    process = subprocess.Popen(command(tiny, "--trials", 2, "--finalists", 0, "--pruner", "none", "--heartbeat", 1,
                                       epochs=20), cwd=REPO, env=quiet_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not glob.glob(str(tiny.logs / RUNS / "last.pth")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(stop)
    assert process.wait() == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    killed = run_dirs(tiny.logs)
    assert len(killed) == 1
    epochs_before = len(pd.read_csv(killed[0] / "valid.csv"))
    assert 1 <= epochs_before < 20
    if stop == signal.SIGKILL:
        time.sleep(2.5)  # twice the heartbeat: the killed trial is stale (Ctrl-C marks it at once)
    folder = search_dirs(tiny.logs)[0]
    code = subprocess.run([sys.executable, str(REPO / "7_search.py"), "--resume", str(folder)], cwd=REPO,
                          env=quiet_env(), capture_output=True, text=True, timeout=240)
    assert code.returncode == 0, code.stdout + code.stderr
    trials = journal_trials(folder / "study.journal")
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2, states
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.user_attrs["run_dir"] == str(killed[0])  # resumed where it stood, not trained again
    epochs = pd.read_csv(killed[0] / "valid.csv")["epoch"]
    assert list(epochs) == list(range(1, 21))
    assert len(run_dirs(tiny.logs)) == 2


# ---------------------------------------------------------------- PostgreSQL

def postgres_binaries() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free port (as the user postgres when we are root: it
    refuses to run as root); skipped only when no PostgreSQL is installed."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL found (.ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="search-pg-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run([*as_user, binaries / "initdb", "-D", data, "-U", "postgres", "--auth", "trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, binaries / "pg_ctl", "-D", data, "-w", "-l", folder / "log", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # the database initdb makes
    finally:
        subprocess.run([*as_user, binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_commands_on_postgresql_run_the_count_asked(tiny, postgres_url):
    """Two machines: the same command twice, one study in the database."""
    run_together([command(tiny, "--trials", 6, "--finalists", 0, "--storage", postgres_url)] * 2)
    study = optuna.load_study(study_name="recipe-search", storage=postgres_url)
    assert_accounted_for(study.get_trials(deepcopy=False), tiny.logs, 6)
    assert study.user_attrs["dataset"] == "tiny"
    assert len(search_dirs(tiny.logs)) == 2  # each command has its folder, the study is one
