"""Every training objective, one table: name -> loss factory.

Notation: logits z (N x K), targets y, p = softmax(z), CE_i = -log p_{i,y_i}, n_c the training count
of class c, pi_c = n_c / sum n.

The engine's side of the contract:
- `forward(logits, targets) -> scalar`, for training batches only. Logits may be bf16/fp16 from
  autocast; every loss computes in float32. No host sync (.item(), .tolist(), bool(tensor)) happens
  in forward, and new tensors are made on the logits' device. Move the criterion with `.to(device)`
  like the model, so its buffers follow.
- `set_epoch(epoch, epochs)` before each training epoch (epoch 0-based, epochs = total planned) and
  `end_epoch(gather=None)` after its last batch. Every loss here has both; most do nothing.
- `cosine_classifier_scale`: None, or LDAM's s, for get_model.use_cosine_classifier.
- `complement_objective`: True only for COT, whose `complement_loss` the engine minimises with a
  second optimizer.
- State that matters for resume (GHM's moving bin fractions, SPBL's thresholds and weights, DRW's
  current weights) lives in buffers, so `state_dict` / `load_state_dict` carry it.

A new objective slots in by writing its module and adding a row to OBJECTIVES.
"""
import argparse
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cli import UserError, non_negative_float, number, positive_float, positive_int

DEFAULTS = {
    "ccegamma": 5.0,
    "flgamma": 2.0,
    "flalpha": None,
    "spbl_start": 0.5,
    "spbl_full": 0.8,
    "ghm_bins": 30,
    "ghm_momentum": 0.75,
    "cb_beta": 0.9999,
    "ldam_max_m": 0.5,
    "ldam_s": 30.0,
    "la_tau": 1.0,
    "drw": None,
}


# ---------------------------------------------------------------- shared pieces

def target_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Boolean N x K mask of the target column; a comparison, so no host sync on any device."""
    return torch.arange(logits.shape[1], device=logits.device) == targets.unsqueeze(1)


def complement_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/(N*K)) sum_i sum_{j != y_i} P_ij log P_ij with P_ij = p_ij / (1 - p_{i,y_i}).

    The complement entropy term of Chen et al., "Complement Objective Training", ICLR 2019. It is
    minus the entropy of the wrong-class distribution (scaled), so minimising it flattens that
    distribution. P_i is the softmax of the logits with the target left out, so log P comes from one
    log-softmax: stable for any logit size and free of the published 1e-7 / 1e-10 fudges.
    """
    n, k = logits.shape
    is_target = target_mask(logits, targets)
    log_p = torch.log_softmax(logits.masked_fill(is_target, float("-inf")), dim=1)
    # the target's P log P is 0 * log 0 = 0; fill with finite values so backward never meets 0 * inf
    log_p = log_p.masked_fill(is_target, 0.0)
    p = log_p.exp().masked_fill(is_target, 0.0)
    return (p * log_p).sum() / (n * k)


def class_balanced_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.

    w_c = (1 - beta) / (1 - beta^{n_c}), normalised so the K weights sum to K. beta = 0 gives all 1.
    Computed in float64: beta^{n_c} for beta = 0.9999 needs the precision.
    """
    counts = class_counts.to(torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * len(counts)).float()


def _log_one_minus_p_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log(1 - p_y) = logsumexp_{j != y} z_j - logsumexp_j z_j: finite wherever K >= 2."""
    is_target = target_mask(logits, targets)
    others = torch.logsumexp(logits.masked_fill(is_target, float("-inf")), dim=1)
    return others - torch.logsumexp(logits, dim=1)


# ---------------------------------------------------------------- losses

class BaseLoss(nn.Module):
    """What every objective offers the engine; the epoch hooks do nothing unless overridden."""

    cosine_classifier_scale = None
    complement_objective = False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch; epoch is 0-based, epochs the total planned."""

    def end_epoch(self, gather=None) -> None:
        """Called after the last training batch of each epoch."""


class PerSampleLoss(BaseLoss):
    """A loss that is a mean of per-sample losses, with optional deferred re-weighting (DRW).

    DRW (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
    NeurIPS 2019): from the 1-based epoch `drw_start` on, the loss is sum_i w_{y_i} l_i / sum_i
    w_{y_i} with w the class-balanced weights, as F.cross_entropy(weight=w) does in the LDAM-DRW
    reference code. Before it, the plain mean. The weights in use are a buffer, so resume keeps them.
    """

    def __init__(self, drw_weights: torch.Tensor | None = None, drw_start: int | None = None):
        super().__init__()
        self.drw_start = drw_start
        if drw_start is not None:
            self.register_buffer("drw_weights", drw_weights)
            self.register_buffer("class_weight", torch.ones_like(drw_weights))

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.per_sample(logits.float(), targets)
        if self.drw_start is None:
            return losses.mean()
        weights = self.class_weight[targets]
        return (weights * losses).sum() / weights.sum()

    def set_epoch(self, epoch: int, epochs: int) -> None:
        if self.drw_start is not None:
            deferred_over = epoch + 1 >= self.drw_start
            self.class_weight.copy_(self.drw_weights if deferred_over else torch.ones_like(self.drw_weights))


class CrossEntropy(PerSampleLoss):
    """ERM: the mean cross-entropy (with DRW, the class-balanced weighted mean from --drw on)."""

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


class ComplementCrossEntropy(BaseLoss):
    """CCE: CE + gamma * complement_entropy (Kim et al., "Imbalanced Image Classification with
    Complement Cross Entropy", Pattern Recognition Letters 2021).

    Sign: complement_entropy is (1/(N*K)) sum P log P = minus a scaled entropy, so gamma > 0 (the
    default 5) rewards a flat wrong-class distribution, which is the paper's stated aim. The
    published code passes -1, which sharpens the wrong-class distribution instead; to reproduce it,
    use --ccegamma -1. gamma = 0 is ERM.
    """

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, targets):
        logits = logits.float()
        return F.cross_entropy(logits, targets) + self.gamma * complement_entropy(logits, targets)


class ComplementObjectiveTraining(BaseLoss):
    """COT (Chen et al., "Complement Objective Training", ICLR 2019): per batch, a CE step, then a
    second forward pass and a second optimizer step on `complement_loss`, both run by the engine.
    """

    complement_objective = True

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float(), targets)

    def complement_loss(self, logits, targets):
        """(1/(N*K)) sum_i sum_{j != y_i} P_ij log P_ij; minimising it flattens wrong classes."""
        return complement_entropy(logits.float(), targets)


class FocalLoss(PerSampleLoss):
    """FL (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), softmax form on logits:
    l_i = -alpha_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}, averaged over the batch.

    alpha: a per-class tensor. A number a from --flalpha is the same a for every class: for softmax
    the target is always the "positive", so a scalar alpha only scales the loss (and so the step
    size); --flalpha cb gives the class-balanced weights (--cb-beta), i.e. CB-focal. (1 - p)^gamma is
    exp(gamma * log(1 - p)) with log(1 - p) from log-sum-exps, so gradients stay finite at p = 1.
    """

    def __init__(self, gamma: float, alpha: torch.Tensor, **drw):
        super().__init__(**drw)
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    def per_sample(self, logits, targets):
        ce = F.cross_entropy(logits, targets, reduction="none")
        modulator = torch.exp(self.gamma * _log_one_minus_p_target(logits, targets))
        return self.alpha[targets] * modulator * ce


class ClassBalancedCrossEntropy(PerSampleLoss):
    """CB (Cui et al., CVPR 2019): sum_i w_{y_i} CE_i / N, with class_balanced_weights (sum K).

    Divided by N, not by sum w: the paper normalises the weights to sum K precisely so that the
    loss keeps the scale of plain CE. beta = 0 is ERM.
    """

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)

    def per_sample(self, logits, targets):
        return self.weights[targets] * F.cross_entropy(logits, targets, reduction="none")


class LDAMLoss(PerSampleLoss):
    """LDAM (Cao et al., NeurIPS 2019): CE(s * (cos - Delta_y on the target column)).

    Delta_c = max_m * n_c^{-1/4} / max_c n_c^{-1/4}, so the rarest class gets max_m. The engine turns
    the model's last layer into a cosine classifier of scale `cosine_classifier_scale` = s, so the
    logits arriving here are already s * cos and the margin subtracted is s * Delta_y.
    """

    def __init__(self, class_counts: torch.Tensor, max_margin: float, scale: float, **drw):
        super().__init__(**drw)
        margins = class_counts.to(torch.float64) ** -0.25
        self.register_buffer("margins", (margins * (max_margin / margins.max())).float())
        self.scale = scale
        self.cosine_classifier_scale = scale

    def per_sample(self, logits, targets):
        target_margin = self.scale * self.margins[targets]
        shifted = logits - target_margin.unsqueeze(1) * target_mask(logits, targets)
        return F.cross_entropy(shifted, targets, reduction="none")


class LogitAdjustedLoss(PerSampleLoss):
    """LA (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021): CE(z + tau log pi).
    tau = 1 is Balanced Softmax (Ren et al., NeurIPS 2020); tau = 0 is ERM.
    """

    def __init__(self, class_counts: torch.Tensor, tau: float):
        super().__init__()
        log_prior = torch.log(class_counts.to(torch.float64) / class_counts.sum())
        self.register_buffer("adjustment", (tau * log_prior).float())

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits + self.adjustment, targets, reduction="none")


class GradientHarmonizing(BaseLoss):
    """GHMC (Li et al., "Gradient Harmonized Single-stage Detector", AAAI 2019), softmax form.

    g_i = 1 - p_{i,y_i} (no gradient) falls in one of M equal bins on [0, 1]; beta_i =
    1 / (d_{b(i)} * m) with d_b the moving average (momentum mu) of bin b's fraction of the batch and
    m the number of bins non-empty in this batch (as in the reference code); loss = sum beta_i CE_i / N.

    Decision: the moving average is over every bin's batch fraction (count / N; an empty bin decays
    towards 0), initialised to the first batch's fractions. For a constant batch size this is exactly
    the spec's N / (moving count * m); keeping fractions means a smaller last batch is not
    up-weighted, and 1 bin is ERM for any batch size.
    """

    def __init__(self, bins: int, momentum: float):
        super().__init__()
        self.bins = bins
        self.momentum = momentum
        self.register_buffer("bin_fraction", torch.zeros(bins))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, logits, targets):
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        with torch.no_grad():
            harmonizing_weight = self._update_and_weigh(ce.detach())
        return (harmonizing_weight * ce).sum() / len(ce)

    def _update_and_weigh(self, ce: torch.Tensor) -> torch.Tensor:
        gradient_norm = -torch.expm1(-ce)  # 1 - p_y, exact near p_y = 1
        bin_index = (gradient_norm * self.bins).long().clamp(0, self.bins - 1)
        batch_count = torch.zeros(self.bins, device=ce.device).scatter_add_(0, bin_index, torch.ones_like(ce))
        batch_fraction = batch_count / len(ce)
        moved = self.momentum * self.bin_fraction + (1.0 - self.momentum) * batch_fraction
        self.bin_fraction.copy_(torch.where(self.initialised, moved, batch_fraction))
        self.initialised.fill_(True)
        non_empty_bins = (batch_count > 0).sum()
        return 1.0 / (self.bin_fraction[bin_index] * non_empty_bins)


class SelfPacedBalance(BaseLoss):
    """SPBL, adapted to a loss from Yang et al., "Self-Paced Balance Learning for Clinical Skin
    Disease Recognition", IEEE TNNLS 2020.

    loss = sum_i v_i w_{y_i} CE_i / sum_i v_i, v_i = [CE_i <= lambda_{y_i}], where lambda_c is the
    r_t-quantile (torch.quantile's linear interpolation) of class c's per-sample CE over the previous
    epoch, and w_c proportional to 1 / H_c, H_c = n_c * exp(-mean CE of c's counted samples in the
    previous epoch), normalised so that sum_c n_c w_c = sum_c n_c (average 1 per training sample).
    r_t = start + (1 - start) * min(1, t / (full * epochs)), t 0-based.

    Decisions:
    - First epoch: every sample counts and w_c is proportional to 1 / n_c (the H_c formula with the
      not-yet-known mean CE taken equal for all classes); with equal class counts this is ERM.
    - When r reaches 1 every sample counts (lambda = +inf), not just those below last epoch's
      maximum, so the final phase trains on all data as the method intends.
    - A class with no sample recorded in the previous epoch keeps all its samples counted. Its mean
      CE for H_c falls back to the mean over its recorded samples when none of them counted, and to
      the mean over all counted samples when none was recorded.
    - end_epoch of epoch t computes the thresholds with r_{t+1}, using the epoch and the total from
      the last set_epoch. A batch where no sample counts gives loss 0 (no gradient).
    - The per-sample CE recorded during an epoch is consumed by end_epoch; a checkpoint written
      mid-epoch (Ctrl-C) carries it as the module's extra state.
    """

    def __init__(self, class_counts: torch.Tensor, start: float, full: float):
        super().__init__()
        self.start = start
        self.full = full
        counts = class_counts.float()
        self.register_buffer("class_counts", counts)
        self.register_buffer("thresholds", torch.full_like(counts, float("inf")))
        self.register_buffer("class_weight", self._normalise(-torch.log(counts)))
        self.register_buffer("first_epoch", torch.tensor(True))
        self.register_buffer("pace", torch.tensor(float(start)))
        self.register_buffer("epoch", torch.tensor(0))
        self.register_buffer("epochs", torch.tensor(0))
        self._records = []

    def pace_at(self, epoch: int, epochs: int) -> float:
        """r_t: rises linearly from `start` at epoch 0 to 1 at epoch full * epochs."""
        ramp = max(self.full * epochs, 1e-12)
        return self.start + (1.0 - self.start) * min(1.0, epoch / ramp)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch.fill_(epoch)
        self.epochs.fill_(epochs)
        self.pace.fill_(self.pace_at(epoch, epochs))

    def forward(self, logits, targets):
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        counted = (ce.detach() <= self.thresholds[targets]) | self.first_epoch
        self._records.append((ce.detach(), targets.detach(), counted))
        weighted = counted * self.class_weight[targets] * ce
        return weighted.sum() / counted.sum().clamp(min=1)

    def end_epoch(self, gather=None) -> None:
        """Turn the epoch's recorded CE into the next epoch's thresholds and class weights."""
        ce, classes, counted = self._take_records()
        if gather is not None:  # every process gathers, even one that recorded nothing
            ce, classes, counted = gather(ce), gather(classes), gather(counted)
        if len(ce) == 0:
            return
        self.thresholds.copy_(self._thresholds(ce, classes, self._next_pace()))
        hardness = self._mean_counted_ce(ce, classes, counted)  # log w_c = mean CE_c - log n_c, i.e. 1/H_c
        self.class_weight.copy_(self._normalise(hardness - torch.log(self.class_counts)))
        self.first_epoch.fill_(False)

    def get_extra_state(self) -> dict:
        """The records of an unfinished epoch, so that a run interrupted mid-epoch resumes exactly."""
        if not self._records:
            return {}
        ce, classes, counted = (torch.cat(parts).cpu() for parts in zip(*self._records))
        return {"ce": ce, "classes": classes, "counted": counted}

    def set_extra_state(self, state: dict) -> None:
        device = self.thresholds.device
        self._records = [tuple(state[k].to(device) for k in ("ce", "classes", "counted"))] if state else []

    def _next_pace(self) -> float:
        """r for the epoch after the last set_epoch's; the current r if set_epoch was never called."""
        if int(self.epochs) == 0:
            return float(self.pace)
        return self.pace_at(int(self.epoch) + 1, int(self.epochs))

    def _take_records(self):
        """The epoch's (CE, class, counted as 0/1) as three 1-D tensors; the record starts afresh."""
        records, self._records = self._records, []
        if not records:
            empty = self.thresholds.new_zeros(0)
            return empty, empty.long(), empty
        ce, classes, counted = (torch.cat(parts) for parts in zip(*records))
        return ce, classes, counted.float()

    def _thresholds(self, ce, classes, pace: float) -> torch.Tensor:
        if pace >= 1.0:
            return torch.full_like(self.thresholds, float("inf"))
        return per_class_quantile(ce, classes, len(self.thresholds), pace)

    def _mean_counted_ce(self, ce, classes, counted) -> torch.Tensor:
        def per_class_sum(values):
            return torch.zeros_like(self.thresholds).index_add_(0, classes, values)

        counted_sum, counted_n = per_class_sum(ce * counted), per_class_sum(counted)
        all_sum, all_n = per_class_sum(ce), per_class_sum(torch.ones_like(ce))
        overall = counted_sum.sum() / counted_n.sum().clamp(min=1)
        mean_all = torch.where(all_n > 0, all_sum / all_n.clamp(min=1), overall)
        return torch.where(counted_n > 0, counted_sum / counted_n.clamp(min=1), mean_all)

    def _normalise(self, log_weight: torch.Tensor) -> torch.Tensor:
        """exp(log_weight) scaled so sum_c n_c w_c = sum_c n_c; in log space, as mean CE can be huge."""
        log_counts = torch.log(self.class_counts)
        log_total = torch.logsumexp(log_counts, dim=0)
        return torch.exp(log_weight - torch.logsumexp(log_weight + log_counts, dim=0) + log_total)


def per_class_quantile(values: torch.Tensor, classes: torch.Tensor, num_classes: int, q: float) -> torch.Tensor:
    """torch.quantile(values[classes == c], q) (linear interpolation) for every class c at once;
    +inf for a class with no value. One sort instead of a loop of masked selections.
    """
    order = torch.argsort(values)
    order = order[torch.argsort(classes[order], stable=True)]
    ordered = values[order]
    counts = torch.bincount(classes, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    position = q * (counts - 1).clamp(min=0).to(values.dtype)
    lower, upper = position.floor(), position.ceil()
    last = len(values) - 1
    lower_value = ordered[(starts + lower.long()).clamp(0, last)]
    upper_value = ordered[(starts + upper.long()).clamp(0, last)]
    quantile = torch.lerp(lower_value, upper_value, position - lower)
    return torch.where(counts > 0, quantile, torch.full_like(quantile, float("inf")))


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
    return SelfPacedBalance(counts, _arg(args, "spbl_start"), _arg(args, "spbl_full"))


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
    "SPBL": Objective(build_spbl, "self-paced balance learning (--spbl-start, --spbl-full)"),
    "GHMC": Objective(build_ghmc, "gradient harmonizing classification loss (--ghm-bins, --ghm-momentum)"),
    "CB": Objective(build_cb, "class-balanced cross-entropy (--cb-beta)"),
    "LDAM": Objective(build_ldam, "label-distribution-aware margin, cosine classifier (--ldam-max-m, --ldam-s)",
                      drw=True),
    "LA": Objective(build_la, "logit-adjusted loss; tau 1 is Balanced Softmax (--la-tau)"),
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
    add("--spbl-start", type=_number_in(0.0, 1.0, False, False), default=DEFAULTS["spbl_start"],
        help="SPBL: quantile r of each class's losses kept in the first epochs, in [0, 1] (default: %(default)s)")
    add("--spbl-full", type=_number_in(0.0, 1.0, True, False), default=DEFAULTS["spbl_full"],
        help="SPBL: fraction of the epochs after which r reaches 1 and every sample counts, in (0, 1] "
             "(default: %(default)s)")
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
             "weigh samples by the class-balanced weights of --cb-beta (LDAM-DRW: --drw 160; the "
             "reference code switches one epoch later, at 161) (default: off)")
