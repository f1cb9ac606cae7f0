"""The run record: what every checkpoint and args.json hold about a run, in one schema.

A best checkpoint (`<value>.pth`) is the record plus the model's weights, its epoch and the
monitored value; `last.pth` adds everything a resume needs. On disk both are flat dicts of
tensors and plain values (read with weights_only=True), so checkpoints written before the
record had a format version (version 1) load unchanged.
"""
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch

from toolkit.cli import UserError

FORMAT_VERSION = 2


@dataclass
class RunRecord:
    """What a run is: enough to rebuild its model, feed it images and name its outputs."""
    model_index: int | None  # None: a model by name (--model), model_name says which
    class_names: list
    height: int
    width: int
    mean: list  # per-channel mean and std of the training images, in [0, 1] (or the pretrained weights' own)
    std: list
    model_name: str | None = None
    dataset: str | None = None
    objective: str | None = None
    class_counts: list | None = None
    cosine_scale: float | None = None  # the model's last layer is a cosine classifier of this scale (LDAM)
    monitor: str = "acc"
    pretrained_weights: str | None = None  # --pretrained imagenet: which weights (their mean and std are above)
    finetune: str = "full"  # --finetune: what was trained (linear: the classifier, on features computed once)
    format_version: int = FORMAT_VERSION

    @property
    def model(self) -> int | str:
        """What get_model builds it from: the table's index, or the name given to --model."""
        return self.model_index if self.model_index is not None else self.model_name

    @classmethod
    def from_dict(cls, values: dict, source) -> "RunRecord":
        """The record inside a checkpoint or args.json; other keys are ignored, a missing required
        one is a UserError naming `source`. A record without a version is of version 1."""
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
        if missing:
            raise UserError(f"{source} lacks {', '.join(missing)}; it was not written by 1_train.py")
        known = {f.name for f in fields(cls)}
        return cls(**{"format_version": 1, **{k: v for k, v in values.items() if k in known}})

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Checkpoint:
    """One checkpoint file: the record, the model's weights after `epoch` epochs, and either the
    monitored `value` (a best checkpoint) or the `resume` state (last.pth: optimizers, scaler,
    criterion, rng, best, batch, epoch_sums, generator)."""
    record: RunRecord
    model: dict
    epoch: int
    value: float | None = None
    resume: dict = field(default_factory=dict)

    def to_state(self) -> dict:
        state = {**self.record.as_dict(), "epoch": self.epoch, "model": self.model, **self.resume}
        if self.value is not None:
            state["value"] = self.value
        return state

    @classmethod
    def from_state(cls, state: dict, source) -> "Checkpoint":
        if not isinstance(state, dict) or "model" not in state:
            raise UserError(f"{source} holds no model weights; it was not written by 1_train.py")
        record = RunRecord.from_dict(state, source)
        own = {f.name for f in fields(RunRecord)} | {"epoch", "model", "value"}
        resume = {k: v for k, v in state.items() if k not in own}
        return cls(record, state["model"], state.get("epoch", 0), state.get("value"), resume)


def load_checkpoint(path: Path, map_location="cpu") -> Checkpoint:
    """Load tensors and plain values only: a checkpoint from a stranger cannot run code."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors alike mean the same to the user
        raise UserError(f"cannot load checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"it is not a checkpoint this toolkit wrote, or it is damaged") from None
    return Checkpoint.from_state(state, f"checkpoint {path}")
