"""The complement-entropy family: CCE (one loss) and COT (two optimiser steps a batch)."""
import torch
import torch.nn.functional as F

from losses.base import Objective, declare, target_mask
from toolkit.cli import number
from toolkit.space import HyperParameter, Uniform


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


@declare("CCE", "complement cross-entropy: CE + gamma * complement entropy term (--ccegamma)", hyper_parameters=[
    HyperParameter("--ccegamma", 5.0, type=number, search=Uniform(0.5, 10.0),
                   help="CCE: weight gamma of the complement entropy term; > 0 flattens the wrong-class "
                        "distribution (the published code's -1 sharpens it) (default: %(default)s)")])
class ComplementCrossEntropy(Objective):
    """CCE: CE + gamma * complement_entropy (Kim et al., "Imbalanced Image Classification with
    Complement Cross Entropy", Pattern Recognition Letters 2021).

    Sign: complement_entropy is (1/(N*K)) sum P log P = minus a scaled entropy, so gamma > 0 (the
    default 5) rewards a flat wrong-class distribution, which is the paper's stated aim. The
    published code passes -1, which sharpens the wrong-class distribution instead; to reproduce it,
    use --ccegamma -1. gamma = 0 is ERM.
    """

    mixing_refusal = ("its complement-entropy term is the entropy of each sample's wrong classes, which needs "
                      "one target class per sample")

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(args.ccegamma)

    def forward(self, logits, targets):
        logits = logits.float()
        return F.cross_entropy(logits, targets) + self.gamma * complement_entropy(logits, targets)


@declare("COT", "complement objective training: a CE step, then a complement-entropy step")
class ComplementObjectiveTraining(Objective):
    """COT (Chen et al., "Complement Objective Training", ICLR 2019): per batch, a CE step, then a
    second forward pass and a second optimizer step on `complement_loss`, both run by the engine
    through `step_losses`.
    """

    mixing_refusal = ("its second step is the complement entropy of each sample's wrong classes, which needs "
                      "one target class per sample")

    def step_losses(self) -> tuple:
        return (self, self.complement_loss)

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float(), targets)

    def complement_loss(self, logits, targets):
        """(1/(N*K)) sum_i sum_{j != y_i} P_ij log P_ij; minimising it flattens wrong classes."""
        return complement_entropy(logits.float(), targets)
