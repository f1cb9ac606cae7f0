"""Cross-entropy and its re-weighted and re-centred forms: ERM, CB, LA."""
import torch
import torch.nn.functional as F

from losses.base import PerSampleLoss


def class_balanced_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.

    w_c = (1 - beta) / (1 - beta^{n_c}), normalised so the K weights sum to K. beta = 0 gives all 1.
    Computed in float64: beta^{n_c} for beta = 0.9999 needs the precision.
    """
    counts = class_counts.to(torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * len(counts)).float()


class CrossEntropy(PerSampleLoss):
    """ERM: the mean cross-entropy (with DRW, the class-balanced weighted mean from --drw on)."""

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


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
