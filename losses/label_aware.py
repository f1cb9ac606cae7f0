"""LAS: label-aware smoothing, the loss of MiSLAS's second stage."""
import math

import torch
import torch.nn.functional as F

from losses.base import PerSampleLoss, declare, deferred_reweighting
from toolkit.cli import number_in
from toolkit.space import Choice, HyperParameter, Uniform

SHAPES = ("concave", "linear", "convex")
EPSILON = number_in(0.0, 1.0)


def label_aware_epsilons(class_counts: torch.Tensor, head: float, tail: float, shape: str = "concave"):
    """Per-class smoothing eps_c from eps_1 = `head` (the largest class, n_1) down to eps_K = `tail`
    (the smallest, n_K), with r_c = (n_c - n_K) / (n_1 - n_K) (MiSLAS, methods.py:35-45):
        concave  eps_c = tail + (head - tail) sin(pi r_c / 2)
        linear   eps_c = tail + (head - tail) r_c
        convex   eps_c = head + (head - tail) sin(3 pi / 2 + pi r_c / 2)
    All classes equally large (n_1 = n_K, where the reference divides 0 by 0): every class is the
    largest, eps_c = head, plain label smoothing. float64 in, float32 out.
    (Their 'exp' shape, r_c to a power, is not offered.)"""
    counts = class_counts.to(torch.float64)
    largest, smallest = counts.max(), counts.min()
    ratio = (counts - smallest) / (largest - smallest) if largest > smallest else torch.ones_like(counts)
    if shape == "concave":
        epsilons = tail + (head - tail) * torch.sin(ratio * math.pi / 2)
    elif shape == "linear":
        epsilons = tail + (head - tail) * ratio
    elif shape == "convex":
        epsilons = head + (head - tail) * torch.sin(1.5 * math.pi + ratio * math.pi / 2)
    else:
        raise ValueError(f"unknown label-aware smoothing shape {shape!r}")
    return epsilons.float()


@declare("LAS", "label-aware smoothing, MiSLAS's stage 2 (--las-head, --las-tail, --las-shape)", needs_counts=True,
         hyper_parameters=[
             HyperParameter("--las-head", 0.3, type=EPSILON, search=Uniform(0.0, 0.5),
                            help="LAS: smoothing eps of the largest class, in [0, 1]; MiSLAS uses 0.1-0.4, 0.3 on "
                                 "CIFAR-10-LT at imbalance 100 (default: %(default)s)"),
             HyperParameter("--las-tail", 0.0, type=EPSILON, search=Uniform(0.0, 0.2),
                            help="LAS: smoothing eps of the smallest class, in [0, 1]; MiSLAS uses 0 or 0.1 "
                                 "(default: %(default)s)"),
             HyperParameter("--las-shape", "concave", options={"choices": SHAPES}, search=Choice(SHAPES),
                            help="LAS: how eps falls from the largest class to the smallest with n_c "
                                 "(default: %(default)s)")])
class LabelAwareSmoothing(PerSampleLoss):
    """LAS (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021; reference
    code dvlab-research/MiSLAS, methods.py:31-64, class LabelAwareSmoothing): label smoothing whose
    eps depends on the sample's class,
        l_i = (1 - eps_{y_i}) CE_i + eps_{y_i} mean_c(-log p_{i,c}),
    with eps_c from label_aware_epsilons: head classes are smoothed more (they are the over-confident
    ones), tail classes less. eps = 0 for every class is the cross-entropy.

    MiSLAS trains it in its stage 2 only (train_stage2.py:238-239), on a stage-1 mixup backbone with
    a class-balanced sampler (train_stage2.py:230, datasets/sampler.py) and the classifier alone
    trained (train_stage2.py:241-243); BatchNorm statistics keep updating when their shift_bn is set
    (train_stage2.py:310-313). Here: --pretrained, --freeze-backbone, --update-bn-stats, --sampler
    class. Their learnable weight scaling of the logits (LWS, methods.py:67-73) is not part of it.
    """

    def __init__(self, epsilons: torch.Tensor, **drw):
        super().__init__(**drw)
        self.register_buffer("epsilons", epsilons)

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(label_aware_epsilons(class_counts, args.las_head, args.las_tail, args.las_shape),
                   **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        log_p = F.log_softmax(logits, dim=1)
        smoothing = self.epsilons[targets]
        return -(1.0 - smoothing) * log_p.gather(1, targets[:, None]).squeeze(1) - smoothing * log_p.mean(dim=1)
