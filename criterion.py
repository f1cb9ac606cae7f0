"""Every training objective, one table: losses/ holds the implementations.

Each row is an objective class; the class declares, with `@declare(...)` above it, its name,
summary, hyper-parameters (flag, type, default, help, search range) and whether --drw applies (see
losses/base.py). DEFAULTS, the command-line flags and a search's space are read from those
declarations. Adding an objective: write its class in losses/, then import it here and add it
to TABLE below (docs/architecture.md, "How to add").

    python criterion.py           # print the table
    python criterion.py --names   # only the names, on one line (3_run.sh's plans read them)
"""
import argparse
import sys

import torch
from torch import nn

from losses.alrp import ALRPLoss
from losses.base import DRW, Declaration, require_every_class
from losses.complement import ComplementCrossEntropy, ComplementObjectiveTraining
from losses.cross_entropy import ClassBalancedCrossEntropy, CrossEntropy, LogitAdjustedLoss
from losses.focal import FocalLoss
from losses.label_aware import LabelAwareSmoothing
from losses.ghm import GradientHarmonizing
from losses.margin import LDAMLoss
from losses.self_paced import SelfPacedBalance
from toolkit.cli import ArgumentParser, UserError, run_main
from toolkit.space import HyperParameter, Withdrawn

TABLE = (
    CrossEntropy,                 # ERM
    ComplementCrossEntropy,       # CCE
    ComplementObjectiveTraining,  # COT
    FocalLoss,                    # FL
    SelfPacedBalance,             # SPBL
    GradientHarmonizing,          # GHMC
    ClassBalancedCrossEntropy,    # CB
    LDAMLoss,                     # LDAM
    LogitAdjustedLoss,            # LA
    LabelAwareSmoothing,          # LAS
    ALRPLoss,                     # ALRP
)

OBJECTIVES: dict[str, Declaration] = {loss.declaration.name: loss.declaration for loss in TABLE}


def hyper_parameters() -> list[HyperParameter]:
    """Every objective flag once, in table order, then --drw."""
    declared = {h.dest: h for row in OBJECTIVES.values() for h in row.hyper_parameters}
    return [*declared.values(), DRW]


DEFAULTS = {h.dest: h.default for h in hyper_parameters()}


def objective_names() -> list[str]:
    return list(OBJECTIVES)


def build_criterion(name: str, class_counts, args: argparse.Namespace) -> nn.Module:
    """The loss module for objective `name`, given the per-class training counts and the parsed
    training plan (toolkit/plan.py, or any namespace holding every objective flag)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown --objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    row = OBJECTIVES[name]
    if args.drw is not None and not row.drw:
        usable = ", ".join(n for n, o in OBJECTIVES.items() if o.drw)
        raise UserError(f"--drw works only with --objective {usable}, not {name}; drop --drw or change --objective")
    if len(class_counts) < 2:
        raise UserError(f"--objective {name} needs at least 2 classes, the training data has "
                        f"{len(class_counts)}; add class folders")
    counts = torch.tensor([int(count) for count in class_counts], dtype=torch.float64)
    if row.needs_counts or args.drw is not None:
        require_every_class(counts, f"--objective {name}")
    return row.loss.from_plan(counts, args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every objective hyper-parameter, in the group "objective hyper-parameters"."""
    group = parser.add_argument_group("objective hyper-parameters")
    for hyper_parameter in hyper_parameters():
        hyper_parameter.add_to(group)
    for row in OBJECTIVES.values():
        for flag, message in (row.withdrawn or {}).items():
            group.add_argument(flag, action=Withdrawn, message=message)


def print_table(argv=None) -> int:
    parser = ArgumentParser(prog="criterion.py", description=(
        "Print the objective table: each objective's name (what --objective takes), summary, flags, "
        "whether --drw applies and whether it trains on mixed batches (--mixup, --cutmix)."))
    parser.add_argument("--names", action="store_true",
                        help="print only the names, in table order, on one line (what 3_run.sh's plans read)")
    if parser.parse_args(argv).names:
        print(" ".join(OBJECTIVES))
        return 0
    for name, row in OBJECTIVES.items():
        flags = ", ".join(h.flag for h in row.hyper_parameters) or "-"
        print(f"{name:<6} {row.summary}\n{'':<6} flags: {flags}; --drw: {'yes' if row.drw else 'no'}; "
              f"mixed batches: {'yes' if row.loss.mixing_refusal is None else 'no'}")
    return 0


def main(argv=None) -> int:
    return run_main(print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
