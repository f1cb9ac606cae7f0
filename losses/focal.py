"""Focal loss."""
import torch
import torch.nn.functional as F

from losses.base import PerSampleLoss, log_one_minus_p_target


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
        modulator = torch.exp(self.gamma * log_one_minus_p_target(logits, targets))
        return self.alpha[targets] * modulator * ce
