"""The recipe search: which objective and hyper-parameters win on a dataset, chosen on validation
only, then confirmed on fresh seeds against ERM (7_search.py).

Two Optuna studies in one storage: the search (NAME), whose trials draw a recipe and its
hyper-parameters and train it as an ordinary run, reporting the best validation --monitor so far
after every epoch so that successive halving can stop it; and the confirmation (NAME-confirm),
whose trials are queued: every finalist and ERM on every confirmation seed, each trained and then
tested once. Only the confirmation reads the test split. Any number of processes, on any number of
machines sharing the storage, work on both; each trial is claimed through the storage, so none is
run twice and the count is the one asked.
"""
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import criterion
from toolkit import data, engine, files, metrics, plan, recipes, training
from toolkit.cli import UserError
from toolkit.predictor import Predictor
from toolkit.space import Choice, Integer, LogUniform

BASELINE = "ERM"
DEFAULT_RECIPES = (*criterion.objective_names(), "LDAM-DRW")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards --trials
SETTLE_EPOCHS = 2  # epochs a late change (DRW, DRS, SPBL's last stage) is given before pruning may judge it
RETRIES = 3  # a trial killed mid-way is retried this often
RDB_ATTEMPTS = 3
POLL_SECONDS = 2.0
HEARTBEAT = "heartbeat"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): retried on --resume"


# ---------------------------------------------------------------- the space

def split_recipe(recipe: str) -> tuple:
    """("LDAM", True) of "LDAM-DRW": an objective of criterion.py's table, with or without --drw."""
    objective, drw = (recipe[:-4], True) if recipe.endswith("-DRW") else (recipe, False)
    if objective not in criterion.OBJECTIVES:
        raise UserError(f"--objectives: unknown recipe {recipe!r}; choose from {', '.join(criterion.OBJECTIVES)} "
                        f"(add -DRW to one that takes --drw, e.g. LDAM-DRW)")
    if drw and not criterion.OBJECTIVES[objective].drw:
        usable = ", ".join(f"{n}-DRW" for n, row in criterion.OBJECTIVES.items() if row.drw)
        raise UserError(f"--objectives {recipe}: {objective} does not take --drw; DRW recipes: {usable}")
    return objective, drw


def recipe_knobs(recipe: str, fixed=frozenset()) -> list:
    """The HyperParameters a search draws for a recipe, in order: the shared knobs (toolkit/plan.py),
    the objective's own and those it reads (losses/), the DRW share of a -DRW recipe, mixup's alpha
    where the objective takes mixed batches; minus those fixed on the command line."""
    objective, drw = split_recipe(recipe)
    row = criterion.OBJECTIVES[objective]
    declared = {h.dest: h for h in criterion.hyper_parameters()}
    knobs = [*plan.SEARCHED_KNOBS, *row.hyper_parameters, *(declared[d] for d in row.reads)]
    knobs += [plan.DRW_SHARE] if drw else []
    knobs += [plan.MIXUP_ALPHA] if row.loss.mixing_refusal is None else []
    return [h for h in knobs if h.search is not None and h.dest not in fixed]


def describe_space(recipes_: list, fixed=frozenset()) -> str:
    """--space: every recipe's knobs and ranges."""
    lines = []
    for recipe in recipes_:
        lines.append(f"{recipe}: {criterion.OBJECTIVES[split_recipe(recipe)[0]].summary}")
        knobs = recipe_knobs(recipe, fixed)
        width = max([len(h.flag) for h in knobs], default=0)
        lines += [f"  {h.flag:<{width}}  {h.search}  (default {'none' if h.default is None else h.default})"
                  for h in knobs] or ["  (nothing searched)"]
    knobs = {h.dest for recipe in recipes_ for h in recipe_knobs(recipe)}
    if set(fixed) & knobs:
        lines.append(f"fixed, not searched: {', '.join(sorted(set(fixed) & knobs))}")
    return "\n".join(lines)


def grid_values(search, points: int) -> list:
    """`points` values spread over a range (on its scale), or every value of a Choice."""
    if isinstance(search, Choice):
        return list(search.values)
    if isinstance(search, LogUniform):
        values = np.geomspace(search.low, search.high, points)
    else:
        values = np.linspace(search.low, search.high, points)
    if isinstance(search, Integer):
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.4g}") for v in values]


def grid(recipes_: list, fixed, points: int) -> list:
    """Every combination of grid values, recipe by recipe: [{"recipe": ..., dest: value, ...}]."""
    combos = []
    for recipe in recipes_:
        knobs = recipe_knobs(recipe, fixed)
        for values in itertools.product(*(grid_values(h.search, points) for h in knobs)):
            combos.append({"recipe": recipe, **{h.dest: v for h, v in zip(knobs, values)}})
    return combos


def for_objective(argv: list, objective: str) -> list:
    """The shared training options without the objective flags that `objective` does not read
    (1_train.py refuses those): `--la-tau 1.5` fixes LA's tau, and ERM's trials go without it."""
    parser = plan.build_parser()
    flag_dests = {o: a.dest for a in parser._actions for o in a.option_strings if a.dest in criterion.DEFAULTS}
    reads = set(criterion.OBJECTIVES[objective].flags)
    kept, dropping = [], False
    for token in argv:
        if token.startswith("--"):
            dest = flag_dests.get(token.split("=", 1)[0])
            if dest is None and token.startswith("--no-"):
                dest = flag_dests.get("--" + token.split("=", 1)[0][5:])
            dropping = dest is not None and dest not in reads
        if not dropping:
            kept.append(token)
    return kept


def recipe_argv(recipe: str, params: dict, epochs: int) -> list:
    """1_train.py's options that set a recipe's drawn values."""
    objective, _ = split_recipe(recipe)
    by_dest = {h.dest: h for h in recipe_knobs(recipe)}
    argv = ["--objective", objective]
    for dest, value in params.items():
        if dest == "recipe":
            continue
        knob = by_dest[dest]
        if knob is plan.DRW_SHARE:
            argv += ["--drw", str(plan.drw_epoch(value, epochs))]
        elif isinstance(value, bool):
            argv.append(knob.flag if value else "--no-" + knob.flag[2:])
        elif value is not None:  # None: the option off (its default)
            argv += [knob.flag, str(value)]
    return argv


def describe_params(recipe: str, params: dict) -> str:
    """"LA, la_tau 1.5, weight_decay 0.001": a recipe in words."""
    shown = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {'none' if v is None else v}"
             for k, v in params.items() if k != "recipe"]
    return ", ".join([recipe, *shown])


def late_change(args) -> int:
    """The last epoch (counted from 1) at which the recipe changes what it trains on: the DRW start,
    the DRS start, an objective's last stage (its classmethod `last_change(args)`, SPBL's); 0 when
    nothing changes late."""
    loss = criterion.OBJECTIVES[args.objective].loss
    own = loss.last_change(args) if hasattr(loss, "last_change") else 0  # an objective's own stages
    return max(args.drw or 0, args.drs or 0, own)


# ---------------------------------------------------------------- pruning

class LateChangeGuard(optuna.pruners.BasePruner):
    """Successive halving, but never before a recipe's late change has had SETTLE_EPOCHS epochs to
    show: a DRW recipe judged at an epoch before its re-weighting starts is judged as plain ERM (see
    docs/search.md for the measurement that made this guard)."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or step < trial.user_attrs.get("settles_at", 0):
            return False
        return self.inner.prune(study, trial)


def build_pruner(kind: str, min_resource: int, reduction_factor: int, epochs: int):
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        inner = optuna.pruners.HyperbandPruner(min_resource, epochs, reduction_factor)
    else:
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource, reduction_factor)
    return LateChangeGuard(inner) if kind != "unguarded" else inner


def rung_epochs(settings) -> list:
    """The epochs at which successive halving compares trials."""
    if settings.pruner == "none":
        return []
    rungs, epoch = [], settings.min_resource
    while epoch < settings.epochs:
        rungs.append(epoch)
        epoch *= settings.reduction_factor
    return rungs


# ---------------------------------------------------------------- the storage

class HeartbeatJournal(JournalStorage, BaseHeartbeat):
    """A journal file with Optuna's heartbeat (its RDB storage has one built in, the journal not):
    each running trial records the time every `interval` seconds; one silent for twice that is
    failed and retried by the callback, by whichever process looks first."""

    def __init__(self, path: Path, interval: int, callback):
        super().__init__(JournalFileBackend(str(path)))
        self.interval, self.callback = interval, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list:
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            # a retried copy carries its original's heartbeat: its own start counts from when it began
            if now - max(trial.system_attrs.get(HEARTBEAT, 0.0), started) > 2 * self.interval:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return self.callback


def quiet_optuna():
    """Optuna's per-trial log lines and its notes on experimental features (the heartbeat, TPE's
    group) would bury the training lines; the search prints its own."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def open_storage(spec: str, heartbeat: int):
    """An RDB URL (postgresql://..., mysql://..., sqlite:///...) or a journal file's path."""
    quiet_optuna()
    retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES, inherit_intermediate_values=True)
    if "://" in spec:
        for attempt in range(RDB_ATTEMPTS):
            try:
                return RDBStorage(spec, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
                                  heartbeat_stale_trial_callback=retry)
            except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, a missing driver...
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                # two machines starting at once both create Optuna's tables: the loser finds them made
                if attempt + 1 < RDB_ATTEMPTS and ("duplicate key" in first or "already exists" in first):
                    time.sleep(1.0 + attempt)
                    continue
                raise UserError(f"cannot open --storage {spec}: {first}; check the URL, the server and the "
                                f"database driver (psycopg for postgresql://)") from None
    path = Path(spec)
    if not path.parent.is_dir():
        raise UserError(f"--storage {spec}: no folder {path.parent} for the journal file; create it or pass an "
                        f"RDB URL such as postgresql://user@host/db")
    return HeartbeatJournal(path, heartbeat, retry)


# ---------------------------------------------------------------- what a search is

@dataclass
class Settings:
    """A search, as search.json holds it: enough for any process to join it."""
    storage: str
    study: str
    search_dir: str
    train_argv: list  # 1_train.py's options every trial shares (the searched ones not among them)
    recipes: list
    fixed: list  # dests given on the command line: not searched
    dataset: str
    epochs: int
    seed: int  # the search's training seed; the confirmation's seeds differ
    trials: int | None
    minutes: float | None
    seeds: list
    finalists: int
    pruner: str
    min_resource: int
    reduction_factor: int
    heartbeat: int
    search_seed: int
    grid: int | None
    fingerprint: dict = field(default_factory=dict)
    joined: bool = False  # this command joined a study another one began: its own sampler seeds

    def write(self):
        files.write_json(Path(self.search_dir) / "search.json", asdict(self))

    @classmethod
    def read(cls, search_dir: Path) -> "Settings":
        path = Path(search_dir) / "search.json"
        if not path.is_file():
            raise UserError(f"--resume {search_dir}: no search.json there; pass a folder "
                            f"logs/search/NAME/<YYYY-MM-DD-HH-MM-SS>/ that 7_search.py wrote")
        return cls(**json.loads(path.read_text()))


def open_study(settings: Settings, create: bool) -> tuple:
    """(storage, the search study in it or None when there is none yet, to create): a study of the
    same search is joined, one of another dataset or other settings refused."""
    storage = open_storage(settings.storage, settings.heartbeat)
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as e:
        raise UserError(f"cannot read --storage {settings.storage}: {str(e).strip().splitlines()[0]}") from None
    found = {s.study_name: s for s in summaries}
    if settings.study in found:
        study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler(settings),
                                  pruner=pruner(settings))
        check_joinable(settings, study)
        return storage, study
    if not create:
        raise UserError(f"--storage {settings.storage} holds no study {settings.study!r}")
    others = [s for s in summaries if not s.study_name.endswith("-confirm")]
    if others and "://" not in settings.storage:
        raise UserError(f"--storage {settings.storage} holds another search ({others[0].study_name!r} of dataset "
                        f"{others[0].user_attrs.get('dataset')!r}); a journal file holds one search: pass a new path")
    return storage, None


SETTINGS_WAIT_S = 30  # how long a joiner waits for the creator of a new study to store its settings


def check_joinable(settings: Settings, study) -> None:
    """Refuse a study of another dataset or of other settings. A study that another process has
    just created holds no settings for a moment (create_study stores them after creating it):
    wait for them rather than take it for a stranger's."""
    deadline = time.monotonic() + SETTINGS_WAIT_S
    stored = study.user_attrs
    while "dataset" not in stored and time.monotonic() < deadline:
        time.sleep(0.2)
        stored = study.user_attrs
    if stored.get("dataset") != settings.dataset:
        raise UserError(f"--storage {settings.storage} holds study {settings.study!r} of dataset "
                        f"{stored.get('dataset')!r}, not {settings.dataset!r}; pass another --storage or "
                        f"--study-name")
    differ = sorted(k for k in settings.fingerprint.keys() | stored.get("fingerprint", {}).keys()
                    if settings.fingerprint.get(k) != stored.get("fingerprint", {}).get(k))
    if differ:
        raise UserError(f"--storage {settings.storage} holds study {settings.study!r} with other settings "
                        f"({', '.join(differ)} differ); pass the same arguments to join it, or --study-name NEW")


def sampler(settings: Settings, worker: int = 0):
    if settings.grid:
        return optuna.samplers.RandomSampler(seed=settings.search_seed)
    seed = settings.search_seed + worker + (os.getpid() if settings.joined else 0)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      constant_liar=True, n_startup_trials=max(4, len(settings.recipes)))


def pruner(settings: Settings):
    return build_pruner(settings.pruner, settings.min_resource, settings.reduction_factor, settings.epochs)


def create_study(settings: Settings, storage):
    """A new search study, its settings stored with it (and a grid queued)."""
    try:
        study = optuna.create_study(study_name=settings.study, storage=storage, direction="maximize",
                                    sampler=sampler(settings), pruner=pruner(settings))
    except optuna.exceptions.DuplicatedStudyError:  # another process created it first: join it
        study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler(settings),
                                  pruner=pruner(settings))
        check_joinable(settings, study)
        return study
    study.set_user_attr("dataset", settings.dataset)
    study.set_user_attr("fingerprint", settings.fingerprint)
    study.set_user_attr("started", time.time())
    if settings.grid:
        for params in grid(settings.recipes, set(settings.fixed), settings.grid):
            study.enqueue_trial(params)
    return study


def load(settings: Settings, name: str, worker: int = 0):
    storage = open_storage(settings.storage, settings.heartbeat)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler(settings, worker),
                             pruner=pruner(settings))


# ---------------------------------------------------------------- trials

class Surplus(Exception):
    """A trial asked for after the study had its count: failed at once, never trained."""


def claimed_before(study, number: int) -> int:
    """Trials before `number` that run or will run (every state but FAIL): the storage numbers
    trials atomically, so each process sees the same order and the first `--trials` win."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and t.state != TrialState.FAIL)


def train_trial(argv: list, after_epoch=None) -> training.Trained:
    """One ordinary 1_train.py run in this process."""
    args = plan.parse_args(argv)
    if args.threads:  # --threads, when given, over the worker's share
        engine.use_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.deterministic:
        engine.use_deterministic_algorithms()
    return training.train_on(args, engine.Distributed(), engine.pick_device(args.device), after_epoch)


def resumable(trial) -> Path | None:
    """A retried trial's run directory, when its killed original finished an epoch there."""
    run_dir = trial.user_attrs.get("run_dir")
    return Path(run_dir) if run_dir and (Path(run_dir) / "last.pth").exists() else None


class Reporter:
    """Trainer's after_epoch for a trial: the run directory noted at once (a retry resumes it), the
    best validation value so far reported each epoch, and a stop when the pruner says so."""

    def __init__(self, trial, prune: bool, epochs: int):
        self.trial, self.prune, self.epochs, self.pruned_at = trial, prune, epochs, None

    def __call__(self, run_dir, epoch, valid_row, best) -> bool:
        if self.trial.user_attrs.get("run_dir") != str(run_dir):
            self.trial.set_user_attr("run_dir", str(run_dir))
        if valid_row is None:  # the run directory is open, no epoch trained yet
            return False
        self.trial.report(best["value"], epoch)
        if self.prune and epoch < self.epochs and self.trial.should_prune():  # the last epoch is paid for
            self.pruned_at = epoch
            return True
        return False


def search_objective(settings: Settings):
    def objective(trial) -> float:
        if settings.trials is not None and claimed_before(trial.study, trial.number) >= settings.trials:
            trial.set_user_attr("note", "surplus: the study had its trials")
            raise Surplus
        recipe = trial.suggest_categorical("recipe", settings.recipes)
        params = {h.dest: h.search.suggest(trial, h.dest) for h in recipe_knobs(recipe, set(settings.fixed))}
        resumed = resumable(trial)
        if resumed:
            trial.set_user_attr("note", "")  # a retry: not interrupted itself
        argv = (["--resume", str(resumed)] if resumed else
                [*for_objective(settings.train_argv, split_recipe(recipe)[0]), *recipe_argv(recipe, params, settings.epochs),
                 "--seed", str(settings.seed)])
        args = plan.parse_args(argv)
        trial.set_user_attr("settles_at", late_change(args) + SETTLE_EPOCHS if late_change(args) else 0)
        report = Reporter(trial, True, args.epochs)
        trained = train_trial(argv, report)
        if trained.exit_code:
            trial.set_user_attr("note", INTERRUPTED)
            raise KeyboardInterrupt
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
            RetryHeartbeatStaleTrialCallback(max_retry=RETRIES, inherit_intermediate_values=True)(study, t)


def state_counts(study) -> dict:
    counts = {state: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def work(settings: Settings, worker: int = 0, threads: int | None = None, gpu: str | None = None, say=print):
    """One worker process: search trials until the study has its count (or its minutes), then
    confirmation trials until none is queued."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if threads:
        torch.set_num_threads(threads)
    study = load(settings, settings.study, worker)
    deadline = study.user_attrs["started"] + 60 * settings.minutes if settings.minutes else math.inf
    objective = search_objective(settings)
    retry_interrupted(study)
    while True:
        fail_stale_trials(study)
        counts = state_counts(study)
        done = sum(counts[s] for s in FINISHED)
        pending = done + counts[TrialState.RUNNING] + counts[TrialState.WAITING]
        if (settings.trials is not None and done >= settings.trials) or time.time() >= deadline:
            break
        if settings.trials is not None and pending >= settings.trials and not counts[TrialState.WAITING]:
            time.sleep(POLL_SECONDS)  # the last trials are running elsewhere (or will be retried)
            continue
        study.optimize(objective, n_trials=1, catch=(Surplus,))
        say(f"worker {worker}: {progress_line(study, settings)}")
    wait_until_settled(study, settings)
    confirm(settings, worker, say)


def wait_until_settled(study, settings):
    """With --minutes, the trials running at the deadline finish before the confirmation begins."""
    while True:
        fail_stale_trials(study)
        counts = state_counts(study)
        if not counts[TrialState.RUNNING] and (settings.trials is None or not counts[TrialState.WAITING]):
            return
        time.sleep(POLL_SECONDS)


def progress_line(study, settings) -> str:
    counts = state_counts(study)
    done = sum(counts[s] for s in FINISHED)
    best = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    top = max(best, key=lambda t: t.value) if best else None
    total = settings.trials if settings.trials is not None else "?"
    return (f"{done}/{total} trials finished ({counts[TrialState.PRUNED]} pruned)"
            + (f"; best so far trial {top.number}: {describe_params(top.params['recipe'], top.params)} "
               f"valid {top.value:.2f}" if top else ""))


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


def confirmation_entries(study, settings: Settings) -> list:
    """What the confirmation trains: each finalist, then ERM with nothing searched."""
    entries = [{"label": describe_params(t.params["recipe"], t.params), "trial": t.number,
                "recipe": t.params["recipe"], "params": t.params, "valid": t.value}
               for t in finalists(study, settings.finalists)]
    return entries + [{"label": f"{BASELINE} (nothing searched)", "trial": None, "recipe": BASELINE, "params": {},
                       "valid": None}]


def confirm_study(settings: Settings, worker: int):
    """The confirmation study: the first process to create it queues every (entry, seed)."""
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
    entries = confirmation_entries(load(settings, settings.study), settings)
    for index, entry in enumerate(entries):
        for seed in settings.seeds:
            study.enqueue_trial({}, user_attrs={"entry": index, "seed": seed})
    study.set_user_attr("entries", entries)
    return study


def confirm_objective(settings: Settings, entries: list):
    def objective(trial) -> float:
        if "entry" not in trial.user_attrs:
            trial.set_user_attr("note", "surplus: nothing was queued")
            raise Surplus
        entry, seed = entries[trial.user_attrs["entry"]], trial.user_attrs["seed"]
        resumed = resumable(trial)
        if resumed:
            trial.set_user_attr("note", "")
        argv = (["--resume", str(resumed)] if resumed else
                [*for_objective(settings.train_argv, split_recipe(entry["recipe"])[0]),
                 *recipe_argv(entry["recipe"], entry["params"], settings.epochs), "--seed", str(seed)])
        trained = train_trial(argv, Reporter(trial, False, settings.epochs))
        if trained.exit_code:
            trial.set_user_attr("note", INTERRUPTED)
            raise KeyboardInterrupt
        scores = test_run(trained.run_dir, plan.parse_args(argv))
        trial.set_user_attr("test_bacc", scores["bacc"])
        return trained.best["value"]
    return objective


def confirm(settings: Settings, worker: int, say=print):
    if not settings.finalists:
        return
    study = confirm_study(settings, worker)
    objective = confirm_objective(settings, study.user_attrs["entries"])
    retry_interrupted(study)
    while True:
        fail_stale_trials(study)
        counts = state_counts(study)
        if counts[TrialState.WAITING]:
            study.optimize(objective, n_trials=1, catch=(Surplus,))
            counts = state_counts(study)
            say(f"worker {worker}: confirmation {counts[TrialState.COMPLETE]}/"
                f"{len(settings.seeds) * len(study.user_attrs['entries'])} runs")
        elif counts[TrialState.RUNNING]:
            time.sleep(POLL_SECONDS)
        else:
            return


def test_run(run_dir: Path, args) -> dict:
    """2_test.py's evaluation of a confirmation run (its best checkpoint on the test split): the
    files 4_report.py reads. The only place the search reads test labels."""
    predictor = Predictor.of_run(run_dir, device=args.device, precision=args.precision)
    record = predictor.record
    dataset = data.dataset_dir(args.data_root, args.dataset)
    split = data.scan_split(dataset, data.evaluation_split(dataset), record.class_names)
    image_set = data.load_images(split, record.height, record.width, predictor.device, args.cache_gb, args.workers,
                                 False)
    labels, logits = predictor.predict(image_set, args.batchsize, args.workers, False, desc="test")
    scores = metrics.test_metrics(labels, logits, record.class_counts)
    scores = metrics.with_intervals(scores, metrics.bootstrap_intervals(labels, logits, 1000))
    names = record.class_names
    confusion = metrics.confusion_matrix(labels, logits.argmax(1), len(names))
    files.write_csv(run_dir / "test_metrics.csv", [{"split": split.name, "checkpoint": predictor.path.name, **scores}])
    files.write_csv(run_dir / "per_class.csv", metrics.per_class(labels, logits, names, record.class_counts)
                    .to_dict("records"))
    files.write_csv(run_dir / "confusion_matrix.csv",
                    [{"true \\ predicted": n, **dict(zip(names, row))} for n, row in zip(names, confusion.tolist())])
    return scores


def confirmation_runs(settings: Settings) -> tuple:
    """(entries, {entry index: [run directories]}) of the finished confirmation."""
    study = load(settings, settings.study + "-confirm")
    entries = study.user_attrs["entries"]
    by_entry = {i: [] for i in range(len(entries))}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by_entry[t.user_attrs["entry"]].append(Path(t.user_attrs["run_dir"]))
    return entries, by_entry
