"""The recipe search: which objective and hyper-parameters win on a dataset, chosen on validation
only, then confirmed on fresh seeds against ERM (7_search.py).

Two Optuna studies in one storage (toolkit/search_storage.py): the search (NAME), whose trials draw
a recipe and its hyper-parameters (toolkit/search_space.py) and train it as an ordinary run,
reporting the best validation --monitor so far after every epoch so that successive halving can
stop it; and the confirmation (NAME-confirm), whose trials are queued: every finalist and ERM on
every confirmation seed, each trained and then tested once, as 2_test.py tests a run
(toolkit/evaluation.py). Only the confirmation reads the test split. Any number of processes, on
any number of machines sharing the storage, work on both; each trial is claimed through the
storage, so none is run twice and the count is the one asked. --minutes is kept by
toolkit/search_budget.py; every run lives under the search folder's runs/.
"""
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from toolkit import engine, evaluation, plan, training
from toolkit.search_budget import COSTLY_KNOBS, Pace
from toolkit.search_space import (BASELINE, SETTLE_EPOCHS, describe_params, for_objective, late_change, recipe_argv,
                                  recipe_knobs, split_recipe)
from toolkit.search_storage import Settings, fail_stale, load, open_storage, quiet_optuna, retry

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards --trials
POLL_SECONDS = 2.0
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): retried on --resume"
TRAINING_LOG = "training.log"  # the trials' own lines (1_train.py's), kept out of the search's output


# ---------------------------------------------------------------- trials

class Surplus(Exception):
    """A trial asked for after the study had its count: failed at once, never trained."""


def claimed_before(study, number: int) -> int:
    """Trials before `number` that run or will run (every state but FAIL): the storage numbers
    trials atomically, so each process sees the same order and the first `--trials` win."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and t.state != TrialState.FAIL)


def resumable(trial) -> Path | None:
    """A retried trial's run directory, when its killed original finished an epoch there."""
    run_dir = trial.user_attrs.get("run_dir")
    return Path(run_dir) if run_dir and (Path(run_dir) / "last.pth").exists() else None


def run_argv(settings: Settings, recipe: str, params: dict, seed: int) -> list:
    """1_train.py's arguments of a trial or a confirmation run: the shared ones, the recipe's, the
    seed, and the search's own runs folder."""
    return [*for_objective(settings.train_argv, split_recipe(recipe)[0]), *recipe_argv(recipe, params, settings.epochs),
            "--seed", str(seed), *(["--logs-root", settings.runs_root] if settings.runs_root else [])]


def train(settings: Settings, args, reporter) -> training.Trained:
    """One ordinary run in this process, its lines and warnings into the search folder's training.log
    (the machine's business is said once, when the worker starts)."""
    with open(Path(settings.search_dir) / TRAINING_LOG, "a") as log, contextlib.redirect_stdout(log), \
            warnings.catch_warnings():
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        return training.start(args, reporter)


class Reporter:
    """Trainer's after_epoch for a trial: the run directory noted at once (a retry resumes it), the
    best validation value so far reported each epoch, a stop when the pruner says so, and what the
    run costs (seconds before its first epoch, seconds an epoch) for the budget."""

    def __init__(self, trial, prune: bool, epochs: int, clock=time.time, measured=None):
        self.trial, self.prune, self.epochs, self.pruned_at = trial, prune, epochs, None
        self.clock, self.measured, self.began, self.opened = clock, measured, clock(), None

    def __call__(self, run_dir, epoch, valid_row, best) -> bool:
        if self.trial.user_attrs.get("run_dir") != str(run_dir):
            self.trial.set_user_attr("run_dir", str(run_dir))
        if valid_row is None:  # the run directory is open, no epoch trained yet
            self.opened = (self.clock(), epoch)
            self.trial.set_user_attr("setup_s", self.opened[0] - self.began)
            return False
        self.trial.set_user_attr("epoch_s", (self.clock() - self.opened[0]) / max(1, epoch - self.opened[1]))
        if self.measured:
            self.measured()
            self.measured = None
        self.trial.report(best["value"], epoch)
        if self.prune and epoch < self.epochs and self.trial.should_prune():  # the last epoch is paid for
            self.pruned_at = epoch
            return True
        return False


def search_objective(settings: Settings, pace: Pace, announce=None):
    def objective(trial) -> float:
        if settings.trials is not None and claimed_before(trial.study, trial.number) >= settings.trials:
            trial.set_user_attr("note", "surplus: the study had its trials")
            raise Surplus
        fixed = set(settings.fixed) | (set() if pace.costly(pace.costs()) else set(COSTLY_KNOBS))
        recipe = trial.suggest_categorical("recipe", settings.recipes)
        params = {h.dest: h.search.suggest(trial, h.dest) for h in recipe_knobs(recipe, fixed)}
        resumed = resumable(trial)
        if resumed:
            trial.set_user_attr("note", "")  # a retry: not interrupted itself
        args = plan.parse_args(["--resume", str(resumed)] if resumed else run_argv(settings, recipe, params,
                                                                                      settings.seed))
        trial.set_user_attr("settles_at", late_change(args) + SETTLE_EPOCHS if late_change(args) else 0)
        report = Reporter(trial, True, args.epochs, pace.clock, announce)
        trained = train(settings, args, report)
        if trained.exit_code:
            trial.set_user_attr("note", INTERRUPTED)
            raise KeyboardInterrupt
        trial.set_user_attr("trial_s", pace.clock() - report.began)
        if report.pruned_at:
            raise optuna.TrialPruned(f"pruned after epoch {report.pruned_at}")
        return trained.best["value"]
    return objective


def retry_interrupted(study):
    """Queue again the trials a Ctrl-C stopped (a kill -9 is found by the heartbeat instead): their
    copies resume the run directories where they stood."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("note") == INTERRUPTED and t.number not in retried:
            retry(study, t)


def state_counts(study) -> dict:
    counts = {state: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def printer(worker: int, jobs: int):
    """The search's own lines, on the output this worker began with (a trial's go to training.log)."""
    out, prefix = sys.stdout, f"worker {worker}: " if jobs > 1 else ""

    def say(line: str):
        print(prefix + line, file=out, flush=True)
    return say


def work(settings: Settings, worker: int = 0, threads: int | None = None, gpu: str | None = None, say=None,
         clock=time.time):
    """One worker process: search trials while the study wants them (its count, or what --minutes
    leaves before the confirmation), then confirmation trials until none is queued."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    engine.use_threads(threads)  # its share of the cores; a busy machine said once, not at every trial
    say = say or printer(worker, settings.jobs)
    quiet_optuna(Path(settings.search_dir))
    study = load(settings, settings.study, worker)
    pace = Pace(settings, study, clock, settings.jobs)
    announced = []

    def announce():
        if not announced and worker == 0:
            announced.append(True)
            say(pace.plan_line())
    objective = search_objective(settings, pace, announce)
    retry_interrupted(study)
    while True:
        fail_stale(study)
        counts = state_counts(study)
        done = sum(counts[s] for s in FINISHED)
        pending = done + counts[TrialState.RUNNING] + counts[TrialState.WAITING]
        if (settings.trials is not None and done >= settings.trials) or not pace.may_start(done):
            break
        if settings.trials is not None and pending >= settings.trials and not counts[TrialState.WAITING]:
            time.sleep(POLL_SECONDS)  # the last trials are running elsewhere (or will be retried)
            continue
        ended = []
        study.optimize(objective, n_trials=1, catch=(Surplus,), callbacks=[lambda _, trial: ended.append(trial)])
        if ended and ended[0].state in FINISHED:
            say(pace.progress_line(ended[0], sum(state_counts(study)[s] for s in FINISHED)))
    wait_until_settled(study, settings)
    confirm(settings, worker, say, pace)


def wait_until_settled(study, settings):
    """With --minutes, the trials running at the deadline finish before the confirmation begins."""
    while True:
        fail_stale(study)
        counts = state_counts(study)
        if not counts[TrialState.RUNNING] and (settings.trials is None or not counts[TrialState.WAITING]):
            return
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------- the finalists and their confirmation

def finalists(study, count: int) -> list:
    """The best `count` complete trials by validation value (distinct recipes and values), best first."""
    found, seen = [], set()
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: (-t.value, t.number)):
        key = json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            found.append(t)
    return found[:count]


def confirmation_entries(chosen: list) -> list:
    """What the confirmation trains: each finalist (a trial), then ERM with nothing searched."""
    entries = [{"label": describe_params(t.params["recipe"], t.params), "trial": t.number,
                "recipe": t.params["recipe"], "params": t.params, "valid": t.value} for t in chosen]
    return entries + [{"label": f"{BASELINE} (nothing searched)", "trial": None, "recipe": BASELINE, "params": {},
                       "valid": None}]


def confirm_study(settings: Settings, pace: Pace, say):
    """The confirmation study: the first process to create it queues every (entry, seed), on the
    seeds that fit in what --minutes leaves, and says so."""
    name = settings.study + "-confirm"
    storage = open_storage(settings.storage, settings.heartbeat)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        while "entries" not in study.user_attrs:  # the creator is queueing
            time.sleep(POLL_SECONDS)
            study = optuna.load_study(study_name=name, storage=storage)
        return study
    search_study = load(settings, settings.study)
    chosen = finalists(search_study, settings.finalists)
    entries, seeds = confirmation_entries(chosen), pace.confirmation_seeds(chosen)
    for index, entry in enumerate(entries):
        for seed in seeds:
            study.enqueue_trial({}, user_attrs={"entry": index, "seed": seed})
    study.set_user_attr("seeds", seeds)
    study.set_user_attr("entries", entries)
    say(pace.confirmation_line(entries, seeds))
    return study


def confirm_objective(settings: Settings, entries: list, pace: Pace):
    def objective(trial) -> float:
        if "entry" not in trial.user_attrs:
            trial.set_user_attr("note", "surplus: nothing was queued")
            raise Surplus
        entry, seed = entries[trial.user_attrs["entry"]], trial.user_attrs["seed"]
        resumed = resumable(trial)
        if resumed:
            trial.set_user_attr("note", "")
        args = plan.parse_args(["--resume", str(resumed)] if resumed else
                               run_argv(settings, entry["recipe"], entry["params"], seed))
        trained = train(settings, args, Reporter(trial, False, settings.epochs, pace.clock))
        if trained.exit_code:
            trial.set_user_attr("note", INTERRUPTED)
            raise KeyboardInterrupt
        scores = evaluation.test_run(trained.run_dir, device=args.device, precision=args.precision,
                                     batchsize=args.batchsize, workers=args.workers, cache_gb=args.cache_gb,
                                     data_root=args.data_root)  # 2_test.py --run RUN_DIR: the same files
        trial.set_user_attr("test_bacc", scores["bacc"])
        return trained.best["value"]
    return objective


def confirm(settings: Settings, worker: int, say, pace: Pace):
    if not settings.finalists:
        return
    study = confirm_study(settings, pace, say)
    entries = study.user_attrs["entries"]
    objective = confirm_objective(settings, entries, pace)
    retry_interrupted(study)
    total = len(entries) * len(study.user_attrs.get("seeds", settings.seeds))
    while True:
        fail_stale(study)
        counts = state_counts(study)
        if counts[TrialState.WAITING]:
            ended = []
            study.optimize(objective, n_trials=1, catch=(Surplus,), callbacks=[lambda _, trial: ended.append(trial)])
            if ended and ended[0].state == TrialState.COMPLETE:
                say(pace.confirmation_progress(ended[0], entries, state_counts(study)[TrialState.COMPLETE], total))
        elif counts[TrialState.RUNNING]:
            time.sleep(POLL_SECONDS)
        else:
            return


def confirmation_runs(settings: Settings) -> tuple:
    """(entries, {entry index: [run directories]}, the seeds) of the finished confirmation; no
    seeds when --minutes left no time for one."""
    study = load(settings, settings.study + "-confirm")
    entries, seeds = study.user_attrs["entries"], study.user_attrs.get("seeds", settings.seeds)
    by_entry = {i: [] for i in range(len(entries))}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by_entry[t.user_attrs["entry"]].append(Path(t.user_attrs["run_dir"]))
    return entries, by_entry, seeds
