"""Focal loss."""
import torch
import torch.nn.functional as F

import argparse

from losses.base import (
    PerSampleLoss,
    class_balanced_weights,
    declare,
    deferred_reweighting,
    log_one_minus_p_target,
    require_every_class,
)
from toolkit.cli import non_negative_float, number_in
from toolkit.space import Choice, HyperParameter, Uniform


def focal_alpha(text: str):
    """--flalpha: None, 'cb', or a number in (0, 1]."""
    if text.lower() == "none":
        return None
    if text.lower() == "cb":
        return "cb"
    try:
        return number_in(0.0, 1.0, low_open=True)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1] or 'cb', got {text!r}") from e


@declare("FL", "focal loss (--flgamma, --flalpha)", reads=["cb_beta"], hyper_parameters=[
    HyperParameter("--flgamma", 2.0, type=non_negative_float, search=Uniform(0.0, 5.0),
                   help="FL: focusing parameter gamma; 0 is cross-entropy (default: %(default)s)"),
    HyperParameter("--flalpha", None, type=focal_alpha, search=Choice((None, "cb")),
                   help="FL: alpha, a number in (0, 1] for every class, or 'cb' for the class-balanced weights of "
                        "--cb-beta (default: none)")])
class FocalLoss(PerSampleLoss):
    """FL (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), softmax form on logits:
    l_i = -alpha_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}, averaged over the batch.

    alpha: a per-class tensor. A number a from --flalpha is the same a for every class: for softmax
    the target is always the "positive", so a scalar alpha only scales the loss (and so the step
    size); --flalpha cb gives the class-balanced weights (--cb-beta), i.e. CB-focal. (1 - p)^gamma is
    exp(gamma * log(1 - p)) with log(1 - p) from log-sum-exps, so gradients stay finite at p = 1.

    With --drw, from its epoch on (PerSampleLoss): loss = sum_i w_{y_i} l_i / sum_i w_{y_i}, i.e.
    sum_i w_{y_i} alpha_{y_i} (1 - p_{i,y_i})^gamma CE_i / sum_i w_{y_i}, w the class-balanced weights.
    This is NOT what the LDAM-DRW reference code computes for focal loss (kaidic/LDAM-DRW losses.py
    lines 7-11 and 21: focal_loss(F.cross_entropy(input, target, reduction='none', weight=w), gamma),
    the weights from cifar_train.py lines 199-206, FocalLoss(weight=per_cls_weights, gamma=1) at
    line 215). With u_i = w_{y_i} CE_i the reference's loss is (1/N) sum_i (1 - exp(-u_i))^gamma u_i:
    - its modulator comes from the weighted CE, (1 - exp(-w_y CE))^gamma = (1 - p_y^{w_y})^gamma,
      not (1 - p_y)^gamma: a weight above 1 makes a sample look harder than it is (below 1, easier),
      so for small CE the weight acts as about w^(1+gamma) instead of w;
    - it divides by N, not by sum_i w_{y_i}, so the loss's scale (and so the step size) follows the
      batch's class mix.
    Ours keeps the modulator the focal loss of the sample's own p_y and the weighted mean that
    F.cross_entropy(weight=w) gives CE and LDAM in the same reference code; we keep it as the
    sounder one. Before the switch both are the plain mean (the reference's weights are all 1 then).
    The reference switches at `idx = epoch // 160` with a 0-based epoch, i.e. in its 161st epoch;
    --drw counts from 1, so `--drw 161` (not 160) reproduces it.
    """

    def __init__(self, gamma: float, alpha: torch.Tensor, **drw):
        super().__init__(**drw)
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    @classmethod
    def from_plan(cls, class_counts, args):
        if args.flalpha is None:
            alpha = torch.ones(len(class_counts))
        elif args.flalpha == "cb":
            require_every_class(class_counts, "--objective FL")
            alpha = class_balanced_weights(class_counts, args.cb_beta)
        else:
            alpha = torch.full((len(class_counts),), float(args.flalpha))
        return cls(args.flgamma, alpha, **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        ce = F.cross_entropy(logits, targets, reduction="none")
        modulator = torch.exp(self.gamma * log_one_minus_p_target(logits, targets))
        return self.alpha[targets] * modulator * ce
