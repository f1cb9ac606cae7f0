"""The run directory: create, find, CSV and TensorBoard logs, checkpoints.

logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ holds args.json, <best>.pth, last.pth,
train.csv, valid.csv, TensorBoard events and curves.svg. Every file is written to a temporary
name and renamed, so a crash never leaves a torn file.
"""
import json
import re
import time
from pathlib import Path

import pandas as pd
import torch

import get_model
from toolkit import augment
from toolkit.cli import UserError
from toolkit.files import save_tensors, write_csv
from toolkit.record import Checkpoint, RunRecord

DATETIME_FORMAT = "%Y-%m-%d-%H-%M-%S"
DATETIME_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")
BEST_CHECKPOINT = re.compile(r"-?\d+\.\d+\.pth")
LOG_COLUMNS = ["epoch", "loss", "acc", "top5acc", "lr"]
# 2_test.py's folders of a run's post-hoc corrections (--logit-adjust, --tau-norm): each a recipe of its own
POST_HOC = ("logit-adjusted", "tau-normalised")


# ---------------------------------------------------------------- run directories

def runs_folder(logs_root: Path, model_name: str, dataset: str, objective: str) -> Path:
    """logs/<model>/<dataset>/<objective>/; timm/NAME's folder is timm-NAME (one level, as every model's)."""
    return Path(logs_root) / model_name.replace("/", "-") / dataset / objective


def new_run_dir(logs_root: Path, model_name: str, dataset: str, objective: str) -> Path:
    """Create logs/<model>/<dataset>/<objective>/<now>/ (waiting a second if that name is taken)."""
    return new_dated_dir(runs_folder(logs_root, model_name, dataset, objective), "a run directory")


def new_dated_dir(parent: Path, what: str) -> Path:
    """Create parent/<YYYY-MM-DD-HH-MM-SS>/ for now, waiting for the next second if that name is
    taken; `what` names it in the error."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            folder = parent / time.strftime(DATETIME_FORMAT)
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                time.sleep(0.2)
    except OSError as e:
        raise UserError(f"cannot create {what} under {parent} ({e.strerror or e})") from None


TOOL_FOLDERS = ("search",)  # a tool's own runs (logs/search/NAME/<datetime>/runs/...): not the user's


def list_runs(folder: Path) -> list:
    """Every run directory below `folder` (those holding args.json), oldest first; a search's runs
    only when `folder` is (in) the search's folder, never as part of the logs root around it."""
    found = [p.parent for p in Path(folder).rglob("args.json") if DATETIME_PATTERN.fullmatch(p.parent.name)
             and p.relative_to(folder).parts[0] not in TOOL_FOLDERS]
    return sorted(found, key=lambda p: (p.name, str(p)))


def find_run(logs_root: Path, model_name: str, dataset: str, objective: str, datetime=None) -> Path:
    """The run with that datetime, or the newest one, for a model, dataset and objective."""
    parent = runs_folder(logs_root, model_name, dataset, objective)
    if datetime is not None and not DATETIME_PATTERN.fullmatch(datetime):
        raise UserError(f"--datetime '{datetime}' is not of the form YYYY-MM-DD-HH-MM-SS "
                        f"(e.g. 2026-01-31-14-05-09)")
    runs = [p for p in list_runs(parent) if p.parent == parent] if parent.is_dir() else []
    if not runs:
        raise UserError(f"no runs in {parent}; train one with 1_train.py first")
    if datetime is None:
        return runs[-1]
    for run in runs:
        if run.name == datetime:
            return run
    raise UserError(f"no run {datetime} in {parent}; runs there: {', '.join(r.name for r in runs)}")


def best_checkpoint(run_dir: Path):
    """The `<value>.pth` file of a run, or None. (Two exist only if the process was killed between
    writing a new best and removing the old one: the higher value is the best.)"""
    found = [p for p in Path(run_dir).iterdir() if BEST_CHECKPOINT.fullmatch(p.name)]
    return max(found, key=lambda p: float(p.name[:-4])) if found else None


def require_best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint of a run directory, or a UserError saying why there is none."""
    if not (Path(run_dir) / "args.json").is_file():
        raise UserError(f"{run_dir} is not a run directory (no args.json there); pass a folder such as "
                        f"logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42")
    checkpoint = best_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"run {run_dir} has no checkpoint (it stopped before finishing an epoch); "
                        f"train again or pick another run")
    return checkpoint


def save_best(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write `<value>.pth` (two decimals) and remove the previous best."""
    path = Path(run_dir) / f"{checkpoint.value:.2f}.pth"
    save_tensors(path, checkpoint.to_state())
    for old in Path(run_dir).iterdir():
        if BEST_CHECKPOINT.fullmatch(old.name) and old != path:
            old.unlink()
    return path


# ---------------------------------------------------------------- logs

class RunLog:
    """train.csv and valid.csv (rewritten whole, atomically, each epoch) and TensorBoard events."""

    def __init__(self, run_dir: Path, epochs_done: int = 0, tensorboard=True):
        """Continue the logs after `epochs_done` epochs: rows of later epochs (written before a
        crash, after the last checkpoint) are dropped, so a resumed run has no gaps or repeats."""
        self.run_dir = Path(run_dir)
        self.rows = {split: [r for r in read_rows(self.run_dir / f"{split}.csv") if r["epoch"] <= epochs_done]
                     for split in ("train", "valid")}
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # slow import: only when logging
            )
            self.writer = SummaryWriter(str(self.run_dir), purge_step=epochs_done + 1)

    def log(self, split: str, row: dict):
        self.rows[split].append(row)
        columns = LOG_COLUMNS + [c for c in row if c not in LOG_COLUMNS]
        write_csv(self.run_dir / f"{split}.csv", self.rows[split], columns)
        if self.writer is not None:
            for name, value in row.items():
                if name != "epoch" and value is not None:
                    self.writer.add_scalar(f"{name}/{split}", value, row["epoch"])
            self.writer.flush()

    def frames(self) -> tuple:
        return pd.DataFrame(self.rows["train"]), pd.DataFrame(self.rows["valid"])

    def close(self):
        if self.writer is not None:
            self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_rows(path: Path) -> list:
    if not path.exists():
        return []
    return pd.read_csv(path).to_dict("records")


# ---------------------------------------------------------------- resume

def resolve_resume(value: str, logs_root: Path, model, dataset, recipe) -> Path:
    """--resume takes a run directory, or a datetime with --model_index (or --model), --dataset, --objective."""
    path = Path(value)
    if (path / "args.json").is_file():
        return path
    if not DATETIME_PATTERN.fullmatch(value):
        raise UserError(f"--resume {value}: no run directory there (it holds no args.json), and it is not "
                        f"a datetime YYYY-MM-DD-HH-MM-SS")
    if model is None or dataset is None:
        raise UserError(f"--resume {value} needs --model_index, --dataset (and --objective) to find the run "
                        f"(--model for a network by name); or pass the run directory itself")
    return find_run(logs_root, get_model.model_name(model), dataset, recipe, value)


def check_resumable(record: RunRecord, model: int | str, class_names: list):
    """Refuse a checkpoint of another model or class list, saying which differs."""
    if record.model != model:
        what = "model_index" if isinstance(model, int) and isinstance(record.model, int) else "model"
        raise UserError(f"the checkpoint is of {what} {record.model}, not {model}")
    stored = record.class_names
    if len(stored) != len(class_names):
        raise UserError(f"the checkpoint has {len(stored)} classes, the dataset {len(class_names)}: "
                        f"{describe_classes(stored, class_names)}")
    if stored != class_names:
        raise UserError(f"the checkpoint's classes differ from the dataset's: {describe_classes(stored, class_names)}")


def describe_classes(stored: list, found: list) -> str:
    missing = [c for c in stored if c not in found]
    extra = [c for c in found if c not in stored]
    if not missing and not extra:
        return "same names in another order"
    return "; ".join(part for part in (f"missing {missing}" if missing else "",
                                       f"new {extra}" if extra else "") if part)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict):
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------- reading finished runs

def run_of(path: Path) -> Path:
    """The run directory of a run, or of a post-hoc result folder inside one (RUN/logit-adjusted)."""
    path = Path(path)
    return path.parent if path.name in POST_HOC else path


def recipe_folder(path: Path) -> str:
    """The objective folder a run is in, e.g. LDAM-DRW; for a post-hoc result, e.g. ERM+logit-adjusted."""
    path = Path(path)
    return f"{path.parent.parent.name}+{path.name}" if path.name in POST_HOC else path.parent.name


def post_hoc_results(run_dirs: list) -> list:
    """The post-hoc result folders of these runs that 2_test.py has written (test_metrics.csv)."""
    return [Path(d) / name for d in run_dirs for name in POST_HOC if (Path(d) / name / "test_metrics.csv").is_file()]


def read_args(run_dir: Path) -> dict:
    return json.loads((run_of(run_dir) / "args.json").read_text())


def read_record(run_dir: Path) -> RunRecord:
    return RunRecord.from_dict(read_args(run_dir), Path(run_dir) / "args.json")


def read_log(run_dir: Path, split: str) -> pd.DataFrame:
    path = run_of(run_dir) / f"{split}.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=LOG_COLUMNS)


def with_empty_groups_said(table: pd.DataFrame) -> pd.DataFrame:
    """The summary with a tested run's empty shot group (NaN: no class in it) shown as 'empty',
    not as the '-' of an untested run."""
    table = table.copy()
    tested = table["test_bacc"].notna() if "test_bacc" in table else pd.Series(False, index=table.index)
    for column in ("test_many_shot", "test_medium_shot", "test_few_shot"):
        if column in table:
            table[column] = table[column].astype(object).where(table[column].notna() | ~tested, "empty")
    return table


def run_summary(run_dir: Path) -> dict:
    """One row of 4_report's summary: what ran, its best validation epoch, its test metrics (for a
    post-hoc result folder, the run's training and the folder's test metrics)."""
    record = read_record(run_dir)
    valid = read_log(run_dir, "valid")
    monitor = record.monitor
    row = {"model": record.model_name, "dataset": record.dataset, "objective": recipe_folder(run_dir),
           "augment": augment.describe(read_args(run_dir)), "datetime": run_of(run_dir).name, "epochs": len(valid),
           "monitor": monitor,
           "best_valid": float("nan"), "best_epoch": float("nan")}
    if len(valid) and monitor in valid:
        best = valid[monitor].idxmax()
        row.update(best_valid=valid.loc[best, monitor], best_epoch=int(valid.loc[best, "epoch"]))
    tested = Path(run_dir) / "test_metrics.csv"
    if tested.exists():
        scores = pd.read_csv(tested, dtype={"min_recall_class": str})  # a class name, "9" or "07"
        scores = scores.astype({c: float for c in scores.select_dtypes("integer")}).iloc[0].to_dict()  # 91 is 91.00
        row.update({f"test_{k}": v for k, v in scores.items() if k not in ("split", "checkpoint")})
    return row
