"""Cross-entropy and its re-weighted and re-centred forms: ERM, CB, LA."""
import torch
import torch.nn.functional as F

from losses.base import PerSampleLoss, class_balanced_weights, declare, deferred_reweighting
from toolkit.cli import non_negative_float, number_in
from toolkit.space import Choice, HyperParameter, Uniform

CB_BETA = HyperParameter(
    "--cb-beta", 0.9999, type=number_in(0.0, 1.0, high_open=True), search=Choice((0.9, 0.99, 0.999, 0.9999)),
    help="CB, --drw and --flalpha cb: beta of the effective number of samples, in [0, 1); 0 weighs all "
         "classes equally (default: %(default)s)")


@declare("ERM", "mean cross-entropy")
class CrossEntropy(PerSampleLoss):
    """ERM: the mean cross-entropy (with DRW, the class-balanced weighted mean from --drw on)."""

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(**deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


@declare("CB", "class-balanced cross-entropy (--cb-beta)", hyper_parameters=[CB_BETA], needs_counts=True)
class ClassBalancedCrossEntropy(PerSampleLoss):
    """CB (Cui et al., CVPR 2019): sum_i w_{y_i} CE_i / N, with class_balanced_weights (sum K).

    Divided by N, not by sum w: the paper normalises the weights to sum K precisely so that the
    loss keeps the scale of plain CE. beta = 0 is ERM. With --drw (same --cb-beta) the DRW weights
    come on top from their epoch on: sum_i v_{y_i} w_{y_i} CE_i / sum_i v_{y_i} (PerSampleLoss).
    """

    def __init__(self, weights: torch.Tensor, **drw):
        super().__init__(**drw)
        self.register_buffer("weights", weights)

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(class_balanced_weights(class_counts, args.cb_beta), **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        return self.weights[targets] * F.cross_entropy(logits, targets, reduction="none")


@declare("LA", "logit-adjusted loss; tau 1 is Balanced Softmax (--la-tau)", needs_counts=True, hyper_parameters=[
    HyperParameter("--la-tau", 1.0, type=non_negative_float, search=Uniform(0.0, 2.5),
                   help="LA: temperature tau of the log-prior added to the logits; 1 is Balanced Softmax, 0 is "
                        "cross-entropy (default: %(default)s)")])
class LogitAdjustedLoss(PerSampleLoss):
    """LA (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021): CE(z + tau log pi).
    tau = 1 is Balanced Softmax (Ren et al., NeurIPS 2020); tau = 0 is ERM. With --drw, from its
    epoch on, sum_i w_{y_i} l_i / sum_i w_{y_i} (PerSampleLoss): with --mixup, the "mixup + DRW +
    Balanced Softmax" of the BagofTricks-LT combination table.
    """

    def __init__(self, class_counts: torch.Tensor, tau: float, **drw):
        super().__init__(**drw)
        log_prior = torch.log(class_counts.to(torch.float64) / class_counts.sum())
        self.register_buffer("adjustment", (tau * log_prior).float())

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(class_counts, args.la_tau, **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits + self.adjustment, targets, reduction="none")
