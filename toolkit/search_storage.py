"""Where a search's two Optuna studies live, and who may join them: a journal file with a heartbeat
or an RDB (PostgreSQL, MySQL, SQLite), retried when a server is slow to start; `Settings`, the
search as search.json holds it; the studies opened, created (a grid queued) or refused when they
hold another dataset's or other settings' search. The only module that reaches into Optuna's
private API (the heartbeat's base class, its stale-trial sweep, a trial's storage id): Optuna is
pinned below its next major version in requirements.txt for that reason.
"""
import json
import logging
import os
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from toolkit import files
from toolkit.cli import UserError
from toolkit.search_space import build_pruner, grid

RETRIES = 3  # a trial killed mid-way is retried this often
RDB_ATTEMPTS = 3
HEARTBEAT = "heartbeat"
OPTUNA_LOG = "optuna.log"


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


def quiet_optuna(folder: Path | None = None):
    """Optuna's log lines and its warnings (experimental features: the heartbeat, TPE's group; its
    notes on coming changes) stay out of the user's output, which holds the search's own lines:
    they go to optuna.log in the search folder, and nowhere while there is none yet."""
    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    logger = logging.getLogger("optuna")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())  # else Python's last-resort handler prints its warnings
    path = str((Path(folder) / OPTUNA_LOG).resolve()) if folder is not None else None
    others = [h for h in logger.handlers if isinstance(h, logging.FileHandler) and path and h.baseFilename != path]
    for handler in others:
        logger.removeHandler(handler)  # another search's, earlier in this process
        handler.close()
    if path and not any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if not getattr(warnings.showwarning, "routes_optuna", False):
        warnings.showwarning = optuna_warnings_to_log(warnings.showwarning)


def optuna_warnings_to_log(show):
    """A warnings.showwarning that sends the warnings raised inside Optuna to its log."""
    package = str(Path(optuna.__file__).parent)

    def route(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, optuna.exceptions.ExperimentalWarning) or \
                any(frame.filename.startswith(package) for frame in traceback.extract_stack()):
            logging.getLogger("optuna").warning(f"{category.__name__}: {message} ({filename}:{lineno})")
        else:
            show(message, category, filename, lineno, file, line)
    route.routes_optuna = True
    return route


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
    runs_root: str = ""  # the trainer's --logs-root for trials and confirmation runs ("": older searches, logs/)
    jobs: int = 1  # worker processes on this machine (the budget shares the confirmation out among them)

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


def create_study(settings: Settings, storage, started: float | None = None):
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
    study.set_user_attr("started", time.time() if started is None else started)  # --minutes count from here
    if settings.grid:
        for params in grid(settings.recipes, set(settings.fixed), settings.grid):
            study.enqueue_trial(params)
    return study


def load(settings: Settings, name: str, worker: int = 0):
    storage = open_storage(settings.storage, settings.heartbeat)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler(settings, worker),
                             pruner=pruner(settings))



def fail_stale(study) -> None:
    """Mark the trials whose heartbeat stopped as failed (and queue their retries)."""
    fail_stale_trials(study)


def retry(study, trial) -> None:
    """Queue a failed trial again, as the heartbeat's callback does: its copy inherits its reports."""
    RetryHeartbeatStaleTrialCallback(max_retry=RETRIES, inherit_intermediate_values=True)(study, trial)
