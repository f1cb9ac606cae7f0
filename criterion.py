"""Every training objective, one table: name -> loss factory; losses/ holds the implementations.

A factory takes the per-class training counts and the parsed arguments and returns a
`losses.base.Objective` (its docstring is the engine's side of the contract). A new objective
slots in by writing its class in losses/ and adding a row to OBJECTIVES (and its arguments to
add_arguments).
"""
import argparse
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from losses.alrp import ALRPLoss
from losses.complement import ComplementCrossEntropy, ComplementObjectiveTraining
from losses.cross_entropy import (
    ClassBalancedCrossEntropy,
    CrossEntropy,
    LogitAdjustedLoss,
    class_balanced_weights,
)
from losses.focal import FocalLoss
from losses.ghm import GradientHarmonizing
from losses.margin import LDAMLoss
from losses.self_paced import MAX_WEIGHT, PACES, SelfPacedBalance
from toolkit.cli import (
    UserError,
    non_negative_float,
    non_negative_int,
    number,
    positive_float,
    positive_int,
)

DEFAULTS = {
    "ccegamma": 5.0,
    "flgamma": 2.0,
    "flalpha": None,
    "spbl_paces": PACES,
    "spbl_max_weight": MAX_WEIGHT,
    "spbl_resample": True,
    "ghm_bins": 30,
    "ghm_momentum": 0.75,
    "cb_beta": 0.9999,
    "ldam_max_m": 0.5,
    "ldam_s": 30.0,
    "la_tau": 1.0,
    "drw": None,
    "alrp_delta": 2.0,
    "alrp_ce_weight": 0.0,
    "alrp_warmup": 0,
}


# ---------------------------------------------------------------- the table

def _arg(args: argparse.Namespace, name: str):
    return getattr(args, name, DEFAULTS[name])


def _counts(class_counts, objective: str, need_positive: bool) -> torch.Tensor:
    if len(class_counts) < 2:
        raise UserError(f"--objective {objective} needs at least 2 classes, the training data has "
                        f"{len(class_counts)}; add class folders")
    empty = [index for index, count in enumerate(class_counts) if count <= 0]
    if need_positive and empty:
        raise UserError(f"--objective {objective} uses per-class training counts, but class index(es) "
                        f"{empty} have no training images; add images to them or remove those classes")
    return torch.tensor(class_counts, dtype=torch.float64)


def _drw(counts: torch.Tensor, args) -> dict:
    if _arg(args, "drw") is None:
        return {}
    return {"drw_weights": class_balanced_weights(counts, _arg(args, "cb_beta")), "drw_start": _arg(args, "drw")}


def _needs_counts(args) -> bool:
    return _arg(args, "drw") is not None


def build_erm(class_counts, args):
    counts = _counts(class_counts, "ERM", _needs_counts(args))
    return CrossEntropy(**_drw(counts, args))


def build_cce(class_counts, args):
    _counts(class_counts, "CCE", False)
    return ComplementCrossEntropy(_arg(args, "ccegamma"))


def build_cot(class_counts, args):
    _counts(class_counts, "COT", False)
    return ComplementObjectiveTraining()


def build_focal(class_counts, args):
    alpha_arg = _arg(args, "flalpha")
    counts = _counts(class_counts, "FL", _needs_counts(args) or alpha_arg == "cb")
    if alpha_arg is None:
        alpha = torch.ones(len(counts))
    elif alpha_arg == "cb":
        alpha = class_balanced_weights(counts, _arg(args, "cb_beta"))
    else:
        alpha = torch.full((len(counts),), float(alpha_arg))
    return FocalLoss(_arg(args, "flgamma"), alpha, **_drw(counts, args))


def build_spbl(class_counts, args):
    counts = _counts(class_counts, "SPBL", True)
    return SelfPacedBalance(counts, _arg(args, "spbl_paces"), _arg(args, "spbl_max_weight"),
                            _arg(args, "spbl_resample"))


def build_ghmc(class_counts, args):
    _counts(class_counts, "GHMC", False)
    return GradientHarmonizing(_arg(args, "ghm_bins"), _arg(args, "ghm_momentum"))


def build_cb(class_counts, args):
    counts = _counts(class_counts, "CB", True)
    return ClassBalancedCrossEntropy(class_balanced_weights(counts, _arg(args, "cb_beta")))


def build_ldam(class_counts, args):
    counts = _counts(class_counts, "LDAM", True)
    return LDAMLoss(counts, _arg(args, "ldam_max_m"), _arg(args, "ldam_s"), **_drw(counts, args))


def build_la(class_counts, args):
    counts = _counts(class_counts, "LA", True)
    return LogitAdjustedLoss(counts, _arg(args, "la_tau"))


def build_alrp(class_counts, args):
    _counts(class_counts, "ALRP", False)
    return ALRPLoss(_arg(args, "alrp_delta"), _arg(args, "alrp_ce_weight"), _arg(args, "alrp_warmup"))


@dataclass(frozen=True)
class Objective:
    """One row of the table: how to build the loss, a one-line summary, whether --drw applies."""

    factory: Callable[[list, argparse.Namespace], nn.Module]
    summary: str
    drw: bool = False


OBJECTIVES = {
    "ERM": Objective(build_erm, "mean cross-entropy", drw=True),
    "CCE": Objective(build_cce, "complement cross-entropy: CE + gamma * complement entropy term (--ccegamma)"),
    "COT": Objective(build_cot, "complement objective training: a CE step, then a complement-entropy step"),
    "FL": Objective(build_focal, "focal loss (--flgamma, --flalpha)", drw=True),
    "SPBL": Objective(build_spbl, "self-paced balance learning: paced per-class selection by rank, bounded "
                                  "class weights and resampling by complexity (--spbl-paces, --spbl-max-weight, "
                                  "--spbl-resample)"),
    "GHMC": Objective(build_ghmc, "gradient harmonizing classification loss (--ghm-bins, --ghm-momentum)"),
    "CB": Objective(build_cb, "class-balanced cross-entropy (--cb-beta)"),
    "LDAM": Objective(build_ldam, "label-distribution-aware margin, cosine classifier (--ldam-max-m, --ldam-s)",
                      drw=True),
    "LA": Objective(build_la, "logit-adjusted loss; tau 1 is Balanced Softmax (--la-tau)"),
    "ALRP": Objective(build_alrp, "aLRP ranking error of the pooled batch, error-driven update "
                                  "(--alrp-delta, --alrp-ce-weight, --alrp-warmup)"),
}


def objective_names() -> list[str]:
    return list(OBJECTIVES)


def build_criterion(name: str, class_counts, args: argparse.Namespace) -> nn.Module:
    """The loss module for objective `name`, given the per-class training counts and parsed args."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown --objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[name]
    if _arg(args, "drw") is not None and not objective.drw:
        usable = ", ".join(n for n, o in OBJECTIVES.items() if o.drw)
        raise UserError(f"--drw works only with --objective {usable}, not {name}; drop --drw or change --objective")
    return objective.factory([int(count) for count in class_counts], args)


# ---------------------------------------------------------------- arguments

def _number_in(low: float, high: float, low_open: bool, high_open: bool):
    """An argparse type for a number in an interval, e.g. [0, 1)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = number(text)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be in {shown}, got {text}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse


def _focal_alpha(text: str):
    """None, 'cb', or a number in (0, 1]."""
    if text.lower() == "none":
        return None
    if text.lower() == "cb":
        return "cb"
    try:
        return _number_in(0.0, 1.0, True, False)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1] or 'cb', got {text!r}") from e


class _Withdrawn(argparse.Action):
    """An option of SPBL's withdrawn definition: using it is a UserError that names the new ones."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        raise UserError(f"{option_string} belonged to SPBL's withdrawn definition (loss-quantile thresholds) and "
                        f"is gone; SPBL now trains in stages of pace shares: use --spbl-paces R [R ...] "
                        f"(default: 0.5 0.75 0.9 1 1), --spbl-max-weight W (default: 10) and "
                        f"--spbl-resample / --no-spbl-resample")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every objective hyper-parameter, in the group "objective hyper-parameters"."""
    group = parser.add_argument_group("objective hyper-parameters")
    add = group.add_argument
    add("--ccegamma", type=number, default=DEFAULTS["ccegamma"],
        help="CCE: weight gamma of the complement entropy term; > 0 flattens the wrong-class distribution "
             "(the published code's -1 sharpens it) (default: %(default)s)")
    add("--flgamma", type=non_negative_float, default=DEFAULTS["flgamma"],
        help="FL: focusing parameter gamma; 0 is cross-entropy (default: %(default)s)")
    add("--flalpha", type=_focal_alpha, default=DEFAULTS["flalpha"],
        help="FL: alpha, a number in (0, 1] for every class, or 'cb' for the class-balanced weights of "
             "--cb-beta (default: none)")
    add("--spbl-paces", type=_number_in(0.0, 1.0, True, False), nargs="+", default=DEFAULTS["spbl_paces"],
        metavar="R", help="SPBL: the share r in (0, 1] of each class (its easiest ceil(r n_c) images) that trains "
                          "in each stage after a first stage of plain CE on every image; the 1 + (number of R) stages "
                          "split the epochs evenly (default: 0.5 0.75 0.9 1 1, the authors')")
    add("--spbl-max-weight", type=_number_in(1.0, math.inf, False, True), default=DEFAULTS["spbl_max_weight"],
        help="SPBL: class weights run from 1 (least complex class) to this (most complex), by rank, before "
             "they are scaled to average 1 per training image; 1 weighs classes equally (default: %(default)s)")
    add("--spbl-resample", action=argparse.BooleanOptionalAction, default=DEFAULTS["spbl_resample"],
        help="SPBL: the authors' curriculum reconstruction, per-class draws handed out by complexity rank "
             "within bounds (default: on)")
    for withdrawn in ("--spbl-start", "--spbl-full"):
        add(withdrawn, action=_Withdrawn, help=argparse.SUPPRESS)
    add("--ghm-bins", type=positive_int, default=DEFAULTS["ghm_bins"],
        help="GHMC: number of gradient-norm bins on [0, 1] (default: %(default)s)")
    add("--ghm-momentum", type=_number_in(0.0, 1.0, False, True), default=DEFAULTS["ghm_momentum"],
        help="GHMC: momentum of the moving bin counts, in [0, 1); 0 uses each batch alone (default: %(default)s)")
    add("--cb-beta", type=_number_in(0.0, 1.0, False, True), default=DEFAULTS["cb_beta"],
        help="CB, --drw and --flalpha cb: beta of the effective number of samples, in [0, 1); 0 weighs all "
             "classes equally (default: %(default)s)")
    add("--ldam-max-m", type=non_negative_float, default=DEFAULTS["ldam_max_m"],
        help="LDAM: margin of the rarest class; the others get max_m * (n_rarest / n_c)^(1/4) (default: %(default)s)")
    add("--ldam-s", type=positive_float, default=DEFAULTS["ldam_s"],
        help="LDAM: scale s of the cosine classifier's logits (default: %(default)s)")
    add("--la-tau", type=non_negative_float, default=DEFAULTS["la_tau"],
        help="LA: temperature tau of the log-prior added to the logits; 1 is Balanced Softmax, 0 is "
             "cross-entropy (default: %(default)s)")
    add("--drw", type=positive_int, default=DEFAULTS["drw"], metavar="EPOCH",
        help="deferred re-weighting with ERM, FL or LDAM: from EPOCH on, counted from 1 as in train.csv, "
             "weigh samples by the class-balanced weights w of --cb-beta, loss sum w l / sum w. With FL this "
             "is sum w (1 - p_y)^gamma CE / sum w, which differs from the LDAM-DRW reference code: it takes "
             "the modulator from the weighted CE, (1 - exp(-w CE))^gamma w CE, and divides by N. The "
             "reference switches at its 0-based epoch 160: --drw 161 (not 160) reproduces it (default: off)")
    add("--alrp-delta", type=positive_float, default=DEFAULTS["alrp_delta"],
        help="ALRP: half-width delta of the smoothed step on logit differences; the aLRP reference uses 1 on "
             "detection logits, 2 keeps the rare classes on digits-lt (default: %(default)s)")
    add("--alrp-ce-weight", type=non_negative_float, default=DEFAULTS["alrp_ce_weight"],
        help="ALRP: weight of the mean cross-entropy added to the ranking error; 0 is the pure ranking "
             "error (default: %(default)s)")
    add("--alrp-warmup", type=non_negative_int, default=DEFAULTS["alrp_warmup"], metavar="EPOCHS",
        help="ALRP: train the first EPOCHS epochs with the cross-entropy alone (default: %(default)s)")
