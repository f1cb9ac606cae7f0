"""Hyper-parameters declared once: the command-line flag (type, default, help) and the range a
recipe search may draw its value from.

An objective lists its HyperParameters beside its class (losses/), the training plan lists the
shared knobs a search tunes (toolkit/plan.py); the flags, the defaults and the search space are all
read from these declarations. A range only says what a search tries; the flag's type says what a
user may type, which is often wider (a search of LA's tau stays in [0, 2.5], a user may type 4).
"""
import argparse
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from toolkit.cli import UserError


@dataclass(frozen=True)
class Uniform:
    """A float drawn evenly from [low, high]."""
    low: float
    high: float
    log: ClassVar[bool] = False

    def holds(self, value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def __str__(self):
        return f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"


class LogUniform(Uniform):
    """A float drawn evenly on a log scale from [low, high]: for scales like a learning rate."""
    log = True


class Integer(Uniform):
    """A whole number drawn evenly from low to high, both included."""

    def holds(self, value) -> bool:
        return isinstance(value, int) and super().holds(value)

    def suggest(self, trial, name: str):
        return trial.suggest_int(name, self.low, self.high)

    def __str__(self):
        return f"integer {self.low} to {self.high}"


@dataclass(frozen=True)
class Choice:
    """One of a few values (None, bools, numbers or strings, as Optuna stores them)."""
    values: tuple

    def holds(self, value) -> bool:
        return value in self.values

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def __str__(self):
        return "one of " + ", ".join("none" if v is None else str(v) for v in self.values)


@dataclass(frozen=True)
class HyperParameter:
    """One option: `flag` with its argparse type, default and help (and any other argparse keyword,
    e.g. nargs or action), `search`, the range a search draws from (None: never searched), and
    `absent`, the value a run whose args.json lacks the flag trained with, when that is not the
    default (a flag added later that changed the default behaviour)."""
    flag: str
    default: object
    help: str
    type: Callable | None = None
    search: Uniform | Choice | None = None  # Uniform, LogUniform, Integer or Choice
    options: dict = field(default_factory=dict)
    absent: object = None  # what training did before the flag existed, when not its default

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, group) -> None:
        typed = {"type": self.type} if self.type else {}
        group.add_argument(self.flag, default=self.default, help=self.help, **typed, **self.options)


class Withdrawn(argparse.Action):
    """An option that no longer exists: using it is a UserError saying what replaced it."""

    def __init__(self, option_strings, dest, message="", **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        raise UserError(f"{option_string} {self.message}")
