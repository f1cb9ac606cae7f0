"""The time a search may take (7_search.py --minutes M): the whole answer, search and confirmation,
within M minutes. What a run costs is measured on the trials themselves (the seconds before the
first epoch, the seconds an epoch, SAM's second pass included where a trial drew it); from that:
how many confirmation seeds fit, when the search must stop starting trials so that the
confirmation ends by M, how many trials to expect, and whether the costly knobs are drawn.
Arithmetic on seconds only: the clock is the caller's, so a test runs it on a fake one.
"""
import math
import statistics
import time
from dataclasses import dataclass

from optuna.trial import TrialState

from toolkit.cli import counted
from toolkit.search_space import describe_params

MIN_SEEDS = 3  # the fewest confirmation seeds that give an interval at all (t(2) = 4.3: only large gains show)
CONFIRM_SHARE = 0.5  # at most this share of --minutes goes to the confirmation: the search keeps the rest
SAM_COST = 2.0  # SAM's ascent and descent: two forward and backward passes a step
COSTLY_KNOBS = ("sam", "mixup")
COSTLY_TRIALS_PER_RECIPE = 2  # the costly knobs are drawn only when this many trials a recipe fit


@dataclass(frozen=True)
class Measured:
    """One trial's cost: seconds before its first epoch (decoding, the model), seconds an epoch
    (training and validation; SAM's second pass included when it drew SAM), seconds it took in all
    (a pruned trial: less than a full run), and whether it drew SAM."""
    setup: float
    epoch: float
    seconds: float
    sam: bool

    @property
    def plain_epoch(self) -> float:
        """Its epoch without SAM's second pass."""
        return self.epoch / SAM_COST if self.sam else self.epoch

    def run(self, epochs: int) -> float:
        """A full run of this trial's recipe."""
        return self.setup + epochs * self.epoch


@dataclass(frozen=True)
class Costs:
    """The trials measured so far, and what a run is expected to cost from them."""
    trials: tuple
    epochs: int

    def __bool__(self) -> bool:
        return bool(self.trials)

    def plain_run(self) -> float:
        """A full run without SAM (ERM's, a recipe not drawn yet): the median of the trials."""
        return (statistics.median(m.setup for m in self.trials)
                + self.epochs * statistics.median(m.plain_epoch for m in self.trials))

    def longest_run(self, sam: bool) -> float:
        """The dearest full run a trial may be: the dearest measured, or the plain run with SAM's
        second pass when SAM may be drawn."""
        plain = self.plain_run()
        with_sam = plain + (SAM_COST - 1) * self.epochs * statistics.median(m.plain_epoch for m in self.trials)
        return max([with_sam if sam else plain, *(m.run(self.epochs) for m in self.trials)])

    def mean_trial(self) -> float:
        """A trial's seconds on average, pruned ones counted (what the search's pace is)."""
        finished = [m.seconds for m in self.trials if m.seconds > 0]
        return statistics.mean(finished) if finished else self.plain_run()


@dataclass(frozen=True)
class Budget:
    """--minutes from `start` (the clock's seconds) for `workers` processes working side by side."""
    start: float
    minutes: float | None
    workers: int = 1

    @property
    def end(self) -> float:
        return self.start + 60 * self.minutes if self.minutes else math.inf

    def left(self, now: float) -> float:
        return self.end - now

    def confirmation(self, runs: list, seeds: int) -> float:
        """Seconds the confirmation takes: every run (finalists and ERM) on every seed, shared out."""
        return sum(runs) * seeds / self.workers

    def seeds_that_fit(self, runs: list, wanted: int) -> int:
        """The most seeds (at most `wanted`) whose confirmation fits in its share of the budget;
        0 when even MIN_SEEDS do not: then there is no confirmation."""
        if not self.minutes:
            return wanted
        fit = self.seeds_within(CONFIRM_SHARE * 60 * self.minutes, runs, wanted)
        return fit if fit >= min(MIN_SEEDS, wanted) else 0

    def seeds_within(self, seconds: float, runs: list, wanted: int) -> int:
        """The most seeds (at most `wanted`) whose confirmation takes at most `seconds`."""
        return min(wanted, int(max(0.0, seconds) * self.workers // sum(runs))) if sum(runs) > 0 else wanted

    def reserved_seeds(self, runs: list, wanted: int) -> int:
        """The seeds the search keeps time for: those that fit in the confirmation's share, and
        MIN_SEEDS at least (a confirmation once planned is not dropped because a dear finalist came)."""
        return min(wanted, max(MIN_SEEDS, self.seeds_within(CONFIRM_SHARE * 60 * self.minutes, runs, wanted)))

    def search_ends(self, confirmation: float) -> float:
        """When the search must have finished its last trial."""
        return self.end - confirmation

    def may_start(self, now: float, trial: float, confirmation: float) -> bool:
        """Whether a trial of `trial` seconds started now ends before the confirmation must begin."""
        return now + trial <= self.search_ends(confirmation)

    def expected_trials(self, now: float, done: int, per_trial: float, confirmation: float) -> int:
        """Trials finished plus those that fit in the search's time left at `per_trial` seconds each."""
        if not self.minutes:
            return done
        left = max(0.0, self.search_ends(confirmation) - now)
        return done + int(left * self.workers // per_trial) if per_trial > 0 else done

    def minutes_for(self, runs: list, seeds: int, trials: int, per_trial: float) -> int:
        """The --minutes that gives `trials` trials and `seeds` confirmation seeds (the confirmation
        within its share)."""
        confirmation = self.confirmation(runs, seeds)
        total = max(confirmation / CONFIRM_SHARE, confirmation + trials * per_trial / self.workers)
        return math.ceil(total / 60)


def draws_costly_knobs(expected_trials: int | None, recipes: int) -> bool:
    """SAM doubles an epoch's cost, and mixup pays off over longer schedules than a search's trials
    (docs/search.md): drawn only when enough trials fit that each recipe is tried a few times with
    them; None (nothing measured yet, the first trial) draws neither."""
    return expected_trials is not None and expected_trials >= COSTLY_TRIALS_PER_RECIPE * recipes


def clock_time(seconds: float) -> str:
    """"04:32": a time of day on the clock's scale (time.time's)."""
    return time.strftime("%H:%M", time.localtime(seconds)) if math.isfinite(seconds) else "-"


def minutes_text(seconds: float) -> str:
    return f"{max(0.0, seconds) / 60:.1f} min"


def opening_line(settings, started: float) -> str:
    """The plan at the start: the recipes, the trials, the confirmation, when it should all end."""
    budget = Budget(started, settings.minutes, settings.jobs)
    runs = (settings.finalists + 1) * len(settings.seeds)
    confirmation = (f"then the best {settings.finalists} and ERM on {'up to ' if settings.minutes else ''}"
                    f"{len(settings.seeds)} fresh seeds ({runs} runs), tested once" if settings.finalists
                    else "no confirmation (--finalists 0)")
    trials = (f"{settings.trials} trials" if settings.trials is not None else
              "as many trials as fit (counted once the first epoch is timed)")
    until = (f"; all within --minutes {settings.minutes:g}, by ~{clock_time(budget.end)}" if settings.minutes else "")
    return (f"searching {len(settings.recipes)} recipes ({', '.join(settings.recipes)}), {settings.epochs} epochs a "
            f"trial: {trials}; {confirmation}{until}")


# ---------------------------------------------------------------- one worker's view of a running search

def measured(trials, epochs: int) -> Costs:
    """The costs the trials recorded (toolkit/search.py's Reporter: setup_s, epoch_s, trial_s)."""
    found = [Measured(t.user_attrs["setup_s"], t.user_attrs["epoch_s"], t.user_attrs.get("trial_s", 0.0),
                      bool(t.params.get("sam"))) for t in trials if "epoch_s" in t.user_attrs]
    return Costs(tuple(found), epochs)


class Pace:
    """The budget applied to a search study as it runs: what the confirmation will cost (the
    current best trials as its finalists, and ERM), how many seeds it gets, whether a trial may
    start, whether the costly knobs are drawn, and the plan and progress lines a user reads."""

    def __init__(self, settings, study, clock=time.time, workers: int = 1):
        self.settings, self.study, self.clock = settings, study, clock
        self.budget = Budget(study.user_attrs["started"], settings.minutes, workers)

    def costs(self) -> Costs:
        return measured(self.study.get_trials(deepcopy=False), self.settings.epochs)

    def complete(self) -> list:
        return sorted(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: (-t.value, t.number))

    def confirmation_runs(self, costs: Costs, finalists: list | None = None) -> list:
        """Seconds of one run of each confirmation entry: each finalist as its trial measured it
        (SAM's second pass included), a finalist not known yet as the dearest run, ERM as a plain run."""
        if not self.settings.finalists or not costs:
            return []
        finalists = self.complete()[:self.settings.finalists] if finalists is None else finalists
        own = [measured([t], costs.epochs).trials for t in finalists]
        runs = [m[0].run(costs.epochs) if m else costs.longest_run(self.costly(costs)) for m in own]
        runs += [costs.longest_run(self.costly(costs))] * (self.settings.finalists - len(finalists))
        return runs + [costs.plain_run()]

    def decision(self, costs: Costs) -> dict | None:
        """Made once, on the first epoch measured, and kept in the study (so workers and a resumed
        search agree, and nothing flips as cheaper or dearer trials come in): whether the costly
        knobs are drawn, and whether a confirmation fits at all. None before any measurement."""
        if not self.settings.minutes:
            return {"costly": True, "confirm": bool(self.settings.finalists)}
        made = self.study.user_attrs.get("budget_decision")
        if made or not costs:
            return made
        plain = [costs.plain_run()] * (self.settings.finalists + 1)
        seeds = self.budget.seeds_that_fit(plain, len(self.settings.seeds)) if self.settings.finalists else 0
        reserve = self.budget.confirmation(plain, seeds)
        expected = self.budget.expected_trials(self.budget.start, 0, costs.plain_run(), reserve)
        made = {"costly": bool(self.settings.trials is not None or self.settings.grid
                               or draws_costly_knobs(expected, len(self.settings.recipes))),
                "confirm": seeds > 0}
        self.study.set_user_attr("budget_decision", made)
        return made

    def costly(self, costs: Costs) -> bool:
        """Whether a trial draws SAM and mixup: always with --trials or --grid (the count is the
        user's); with --minutes only when plain runs would give COSTLY_TRIALS_PER_RECIPE trials a
        recipe; never before a first epoch is measured."""
        if self.settings.trials is not None or self.settings.grid:
            return True
        made = self.decision(costs)
        return bool(made and made["costly"])

    def seeds(self, costs: Costs) -> int:
        """The confirmation seeds the search keeps time for."""
        made, runs = self.decision(costs), self.confirmation_runs(costs)
        if not runs or not made or not made["confirm"]:
            return 0
        return self.budget.reserved_seeds(runs, len(self.settings.seeds)) if self.settings.minutes else \
            len(self.settings.seeds)

    def confirmation(self, costs: Costs) -> float:
        runs = self.confirmation_runs(costs)
        return self.budget.confirmation(runs, self.seeds(costs)) if runs else 0.0

    def expected(self, costs: Costs, done: int) -> int | None:
        """The trials the search should end with: --trials, or those that fit in --minutes."""
        if self.settings.trials is not None:
            return self.settings.trials
        if not costs:
            return None
        return self.budget.expected_trials(self.clock(), done, costs.mean_trial(), self.confirmation(costs))

    def may_start(self, done: int) -> bool:
        """Whether this worker may start another search trial."""
        if not self.settings.minutes:
            return True
        costs, now = self.costs(), self.clock()
        if not costs:
            return now < self.budget.end
        return self.budget.may_start(now, costs.longest_run(self.costly(costs)), self.confirmation(costs))

    def plan_line(self) -> str:
        """The plan once an epoch has been measured: trials, the confirmation, when each phase ends."""
        costs, now = self.costs(), self.clock()
        seeds, runs = self.seeds(costs), self.confirmation_runs(costs)
        confirmation = self.budget.confirmation(runs, seeds) if runs else 0.0
        expected = self.expected(costs, 0)
        search_end = self.budget.search_ends(confirmation) if self.settings.minutes else \
            now + (expected or 0) * costs.plain_run() / self.budget.workers
        said = [f"plan: a run of {self.settings.epochs} epochs takes ~{costs.plain_run():.0f} s "
                f"({costs.trials[0].setup:.0f} s to start, {costs.trials[0].epoch:.1f} s an epoch"
                + (" with SAM" if costs.trials[0].sam else "") + f"); ~{expected} trials"
                + (" of a whole run (more, as weak ones are pruned early)" if self.settings.trials is None else "")
                + ", "
                f"the search until ~{clock_time(search_end)}"]
        if runs and seeds:
            said.append(f"then the confirmation: {counted(self.settings.finalists, 'finalist')} and ERM on "
                        f"{seeds} seeds ({len(runs) * seeds} runs) until ~{clock_time(search_end + confirmation)}")
            if seeds < len(self.settings.seeds):
                said.append(f"{len(self.settings.seeds)} seeds do not fit in --minutes {self.settings.minutes:g}, "
                            f"{seeds} do: the interval is wider (docs/search.md, how many seeds)")
        elif self.settings.finalists:
            said.append(self.too_small(costs))
        if not self.costly(costs) and {"sam", "mixup"} - set(self.settings.fixed):
            said.append(f"SAM and mixup left out: fewer than {COSTLY_TRIALS_PER_RECIPE} trials a recipe fit "
                        f"(SAM doubles an epoch; mixup needs longer schedules)")
        return "\n  ".join(said)  # the plan, then its clauses indented below it

    def too_small(self, costs: Costs) -> str:
        runs = self.confirmation_runs(costs)
        needed = self.budget.confirmation(runs, MIN_SEEDS)
        wanted = self.budget.minutes_for(runs, len(self.settings.seeds), 10, costs.mean_trial())
        return (f"no confirmation: --minutes {self.settings.minutes:g} is too small ({len(runs)} runs a seed, "
                f"{MIN_SEEDS} seeds need ~{minutes_text(needed)}, half the budget at most); the search answers "
                f"on validation only. --minutes {wanted} would give ~10 trials and {len(self.settings.seeds)} seeds")

    def progress_line(self, trial, done: int) -> str:
        """After a trial: `trial n of ~N`, what it did, the best so far, the time left."""
        costs = self.costs()
        expected = self.expected(costs, done)
        total = "?" if expected is None else expected if self.settings.trials is not None else f"~{max(expected, done)}"
        state = trial.state.name.lower() if trial.state.name != "COMPLETE" else f"valid {trial.value:.2f}"
        if trial.state.name == "PRUNED":
            state = f"pruned after epoch {max(trial.intermediate_values, default=0)}"
        said = (f"trial {done} of {total} (#{trial.number}): "
                f"{describe_params(trial.params.get('recipe', '?'), trial.params)}, {state}")
        best = self.complete()
        if best:
            said += f"; best so far #{best[0].number} ({best[0].params['recipe']}) valid {best[0].value:.2f}"
        if self.settings.minutes:
            said += f"; {minutes_text(self.budget.left(self.clock()))} left"
        return said

    def confirmation_seeds(self, finalists: list) -> list:
        """The seeds the confirmation trains on: --seeds, or as many of them as fit in the time left
        (MIN_SEEDS at least, once the plan gave the confirmation a place); [] when none was planned."""
        wanted, costs = self.settings.seeds, self.costs()
        if not self.settings.minutes or not costs:
            return wanted
        made = self.decision(costs)
        if not made["confirm"]:
            return []
        fit = self.budget.seeds_within(self.budget.left(self.clock()), self.confirmation_runs(costs, finalists),
                                       len(wanted))
        return wanted[:max(MIN_SEEDS, fit)]

    def confirmation_line(self, entries: list, seeds: list) -> str:
        """The switch to the confirmation, the finalists named."""
        if not seeds:
            return self.too_small(self.costs())
        costs = self.costs()
        runs = self.confirmation_runs(costs) if costs else []
        until = f", until ~{clock_time(self.clock() + self.budget.confirmation(runs, len(seeds)))}" if runs else ""
        named = "; ".join(f"{i}. {e['label']} (#{e['trial']}, valid {e['valid']:.2f})"
                          for i, e in enumerate(entries[:-1], 1))
        return (f"confirmation: {counted(len(entries) - 1, 'finalist')} and ERM on seeds {' '.join(map(str, seeds))} "
                f"({len(entries) * len(seeds)} runs{until}): {named or 'no complete trial'}; "
                f"and {entries[-1]['label']}")

    def confirmation_progress(self, trial, entries: list, done: int, total: int) -> str:
        """After a confirmation run: `confirmation run k of K`, what it was, the time left."""
        entry = entries[trial.user_attrs["entry"]]
        said = (f"confirmation run {done} of {total}: {entry['label']}, seed {trial.user_attrs['seed']}: "
                f"valid {trial.value:.2f}")
        return said + (f"; {minutes_text(self.budget.left(self.clock()))} left" if self.settings.minutes else "")
