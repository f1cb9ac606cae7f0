"""LDAM: label-distribution-aware margins on a cosine classifier."""
import torch
import torch.nn.functional as F

from losses.base import PerSampleLoss, declare, deferred_reweighting, target_mask
from models import use_cosine_classifier
from toolkit.cli import non_negative_float, positive_float
from toolkit.space import HyperParameter, LogUniform, Uniform


@declare("LDAM", "label-distribution-aware margin, cosine classifier (--ldam-max-m, --ldam-s)",
         needs_counts=True, hyper_parameters=[
             HyperParameter("--ldam-max-m", 0.5, type=non_negative_float, search=Uniform(0.1, 1.0),
                            help="LDAM: margin of the rarest class; the others get max_m * (n_rarest / n_c)^(1/4) "
                                 "(default: %(default)s)"),
             HyperParameter("--ldam-s", 30.0, type=positive_float, search=LogUniform(5.0, 50.0),
                            help="LDAM: scale s of the cosine classifier's logits (default: %(default)s)")])
class LDAMLoss(PerSampleLoss):
    """LDAM (Cao et al., NeurIPS 2019): CE(s * (cos - Delta_y on the target column)).

    Delta_c = max_m * n_c^{-1/4} / max_c n_c^{-1/4}, so the rarest class gets max_m. 
    `adapt_model` turns the model's last layer into a cosine classifier of scale s, so the
    logits arriving here are already s * cos and the margin subtracted is s * Delta_y.
    """

    def __init__(self, class_counts: torch.Tensor, max_margin: float, scale: float, **drw):
        super().__init__(**drw)
        margins = class_counts.to(torch.float64) ** -0.25
        self.register_buffer("margins", (margins * (max_margin / margins.max())).float())
        self.scale = scale

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(class_counts, args.ldam_max_m, args.ldam_s, **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        target_margin = self.scale * self.margins[targets]
        shifted = logits - target_margin.unsqueeze(1) * target_mask(logits, targets)
        return F.cross_entropy(shifted, targets, reduction="none")

    def adapt_model(self, model):
        return use_cosine_classifier(model, self.scale)
