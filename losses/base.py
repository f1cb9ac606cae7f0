"""What every objective offers the engine, and the pieces several objectives share.

Notation: logits z (N x K), targets y, p = softmax(z), CE_i = -log p_{i,y_i}, n_c the training count
of class c, pi_c = n_c / sum n.

The contract:
- `forward(logits, targets) -> scalar`, for training batches only. Logits may be bf16/fp16 from
  autocast; every loss computes in float32. No host sync (.item(), .tolist(), bool(tensor)) happens
  in forward, and new tensors are made on the logits' device. The loss moves with `.to(device)`
  like the model, so its buffers follow.
- Hooks, always called, each doing nothing unless an objective needs it:
  `adapt_model(model)` once before training (LDAM's cosine classifier), `step_losses()` the losses
  minimised one after another on each batch, one optimiser each (COT's second step),
  `epoch_draws(...)` which training images an epoch draws (SPBL's selection), `set_epoch(epoch,
  epochs)` before each training epoch, `end_epoch(gather)` after its last batch, and
  `epoch_log()` the objective's own columns of train.csv.
- `mixing_refusal`: None when the loss is a mean of per-sample terms, so that a mixed batch
  (mixup, cutmix) can be scored as lambda L(y_a) + (1 - lambda) L(y_b) per sample, else the reason
  it cannot be (`supports_mixed_targets` says which). Only a mixable objective is ever handed a
  `MixedTargets(a, b, lam)` in place of the targets tensor (training.build_setup refuses
  --mixup/--cutmix with the others, quoting the reason); `PerSampleLoss` handles it, so a new
  per-sample objective supports mixing by writing `per_sample` only. lam is a 0-d float tensor on
  the logits' device (the share of a); lam = 1 gives exactly the unmixed loss.
- State that matters for resume lives in buffers or extra state, so `state_dict` carries it.

The declaration: every objective class says, with `@declare(...)` above it, its name, its
one-line summary, its hyper-parameters (flag, type, default, help, and the range a search draws
from), whether --drw applies and whether it needs every class to have training images; and it
builds itself from the parsed training plan with `from_plan(class_counts, args)`. criterion.py's
table lists the classes; its defaults, flags and the search space are read from the declarations.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from toolkit.cli import UserError, positive_int
from toolkit.space import HyperParameter


class MixedTargets(NamedTuple):
    """The targets of a mixed batch (mixup, cutmix): sample i is lam parts of class a[i] and
    1 - lam parts of class b[i]; lam is a 0-d float tensor on the device, one for the batch."""
    a: torch.Tensor
    b: torch.Tensor
    lam: torch.Tensor


@dataclass(frozen=True)
class Declaration:
    """What an objective says of itself: its row of criterion.py's table and its flags."""
    name: str
    summary: str
    loss: type
    hyper_parameters: tuple = ()
    reads: tuple = ()  # dests of flags declared by another objective that this one uses too
    drw: bool = False
    needs_counts: bool = False
    withdrawn: dict | None = None  # flags of an earlier definition -> what replaced them

    @property
    def flags(self) -> tuple:
        """The dests of every objective flag this objective reads (its own and `reads`)."""
        return tuple(h.dest for h in self.hyper_parameters) + self.reads + (("drw",) if self.drw else ())


def declare(name: str, summary: str, hyper_parameters=(), reads=(), drw=None, needs_counts=False, withdrawn=None):
    """Class decorator: attach the objective's Declaration as `cls.declaration`. `drw` None (the
    default): --drw applies exactly when the class is a PerSampleLoss, whose weighted mean DRW is;
    its from_plan passes `deferred_reweighting(class_counts, args)` on to PerSampleLoss."""
    def attach(cls):
        applies = issubclass(cls, PerSampleLoss) if drw is None else drw
        cls.declaration = Declaration(name, summary, cls, tuple(hyper_parameters), tuple(reads), applies,
                                      needs_counts, withdrawn)
        return cls
    return attach


class Objective(nn.Module):
    """The base of every training objective; the hooks do nothing unless overridden."""

    declaration: Declaration
    mixing_refusal = "its loss is not a mean of per-sample terms"

    @property
    def supports_mixed_targets(self) -> bool:
        return self.mixing_refusal is None

    @classmethod
    def from_plan(cls, class_counts: torch.Tensor, args) -> "Objective":
        """The objective for these per-class training counts (float64) and the parsed plan."""
        return cls()

    @classmethod
    def last_change(cls, args) -> int:
        """The epoch (counted from 1) at which the objective last changes what it trains on (a
        stage of its own, SPBL's), 0 when it never does: a recipe search does not prune before it."""
        return 0

    def adapt_model(self, model: nn.Module) -> nn.Module:
        """The model this objective trains, built from the table's model (returned unchanged here)."""
        return model

    def step_losses(self) -> tuple:
        """Losses (logits, targets) -> scalar minimised in turn on each batch, each by its own
        optimiser and forward pass; the first is the one logged."""
        return (self,)

    def epoch_draws(self, epoch: int, epochs: int, labels: torch.Tensor, training_logits):
        """How many times each training image (indexed as `labels`, on the CPU) is drawn in this
        epoch, or None to leave it to --sampler. Called at the start of every epoch, before set_epoch,
        also when a run resumes part-way through it, so the same state must give the same draws.
        `training_logits()` evaluates the model on every training image (float32 (N, K) on the CPU,
        the same in every torchrun process); it costs a pass over the data, so call it sparingly."""
        return None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch; epoch is 0-based, epochs the total planned."""

    def end_epoch(self, gather=None) -> None:
        """Called after the last training batch of each epoch; `gather` concatenates a tensor over
        torchrun's processes (None in a single process)."""

    def epoch_log(self) -> dict:
        """Columns this objective adds to the epoch's train.csv row (after the standard five)."""
        return {}


class PerSampleLoss(Objective):
    """A loss that is a mean of per-sample losses, with optional deferred re-weighting (DRW).

    DRW (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
    NeurIPS 2019): from the 1-based epoch `drw_start` on, the loss is sum_i w_{y_i} l_i / sum_i
    w_{y_i} with w the class-balanced weights, as F.cross_entropy(weight=w) does in the LDAM-DRW
    reference code. Before it, the plain mean. The weights in use are a buffer, so resume keeps them.

    Mixed targets (a, b, lam): without DRW, mean_i [lam l(z_i, a_i) + (1 - lam) l(z_i, b_i)]. With
    DRW, each label set is weighted by its own classes' weights and normalised by its own weight
    sum: lam sum_i w_{a_i} l(z_i, a_i) / sum_i w_{a_i} + (1 - lam) sum_i w_{b_i} l(z_i, b_i) /
    sum_i w_{b_i}: the mixup reference code's mixup_criterion, lam * criterion(z, a) + (1 - lam) *
    criterion(z, b), with criterion = F.cross_entropy(weight=w). Either way lam = 1 gives the
    unmixed loss bit for bit (0 * a finite loss adds nothing)."""

    mixing_refusal = None

    def __init__(self, drw_weights: torch.Tensor | None = None, drw_start: int | None = None):
        super().__init__()
        self.drw_start = drw_start
        if drw_start is not None:
            self.register_buffer("drw_weights", drw_weights)
            self.register_buffer("class_weight", torch.ones_like(drw_weights))

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets) -> torch.Tensor:
        logits = logits.float()
        if isinstance(targets, MixedTargets):
            if self.drw_start is None:
                lam = targets.lam
                return (lam * self.per_sample(logits, targets.a)
                        + (1.0 - lam) * self.per_sample(logits, targets.b)).mean()
            return targets.lam * self.weighted_mean(logits, targets.a) \
                + (1.0 - targets.lam) * self.weighted_mean(logits, targets.b)
        return self.weighted_mean(logits, targets)

    def weighted_mean(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean of the per-sample losses, weighted by the DRW class weights when DRW is on."""
        losses = self.per_sample(logits, targets)
        if self.drw_start is None:
            return losses.mean()
        weights = self.class_weight[targets]
        return (weights * losses).sum() / weights.sum()

    def set_epoch(self, epoch: int, epochs: int) -> None:
        if self.drw_start is not None:
            deferred_over = epoch + 1 >= self.drw_start
            self.class_weight.copy_(self.drw_weights if deferred_over else torch.ones_like(self.drw_weights))


def target_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Boolean N x K mask of the target column; a comparison, so no host sync on any device."""
    return torch.arange(logits.shape[1], device=logits.device) == targets.unsqueeze(1)


def log_one_minus_p_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log(1 - p_y) = logsumexp_{j != y} z_j - logsumexp_j z_j: finite wherever K >= 2."""
    is_target = target_mask(logits, targets)
    others = torch.logsumexp(logits.masked_fill(is_target, float("-inf")), dim=1)
    return others - torch.logsumexp(logits, dim=1)



# ---------------------------------------------------------------- shared by several objectives

DRW = HyperParameter(
    "--drw", None, type=positive_int, options={"metavar": "EPOCH"},
    help="deferred re-weighting (objectives whose table row says so): from EPOCH on, counted from 1 as in "
         "train.csv, weigh samples by the class-balanced weights w of --cb-beta, loss sum w l / sum w. With FL "
         "this is sum w (1 - p_y)^gamma CE / sum w, which differs from the LDAM-DRW reference code: it takes "
         "the modulator from the weighted CE, (1 - exp(-w CE))^gamma w CE, and divides by N. The reference "
         "switches at its 0-based epoch 160: --drw 161 (not 160) reproduces it (default: off)")


def class_balanced_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.

    w_c = (1 - beta) / (1 - beta^{n_c}), normalised so the K weights sum to K. beta = 0 gives all 1.
    Computed in float64: beta^{n_c} for beta = 0.9999 needs the precision.
    """
    counts = class_counts.to(torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * len(counts)).float()


def deferred_reweighting(class_counts: torch.Tensor, args) -> dict:
    """PerSampleLoss's DRW keywords from --drw and --cb-beta (none when --drw is off)."""
    if args.drw is None:
        return {}
    return {"drw_weights": class_balanced_weights(class_counts, args.cb_beta), "drw_start": args.drw}


def require_every_class(class_counts: torch.Tensor, what: str) -> None:
    """Refuse per-class counts with an empty class: `what` (e.g. "--objective CB") divides by them."""
    empty = [index for index, count in enumerate(class_counts.tolist()) if count <= 0]
    if empty:
        raise UserError(f"{what} uses per-class training counts, but class index(es) {empty} have no training "
                        f"images; add images to them or remove those classes")
