"""Weight balancing's MaxNorm constraint on the classifier (Alshammari et al., "Long-Tailed
Recognition via Weight Balancing", CVPR 2022), after the authors' code (ShadeAlsha/LTR-weight-balancing).

Each class's weight vector w_c (a row of the classifier layer) is kept within an L2 ball by
projected gradient descent: after a step, a row whose norm exceeds the threshold t is scaled back
to norm t, the others are left alone; the bias is not constrained (`utils/regularizers.py`:38-50,
`MaxNorm_via_PGD.PGD` with its tau 1; a 1-d parameter gets threshold inf at :22-24). The threshold
is set once, from the row norms when the constraint starts: t = min_c ||w_c|| + THRESH (max_c
||w_c|| - min_c ||w_c||) (`setPerLayerThresh`, :16-28), so `--max-norm 0.1` (their second stage,
`demo2_second-stage-training.py`:316-318) lets no class grow past a tenth of the way from the
smallest norm to the largest, and 1 past the largest. Weight decay is `--weight-decay` (their second
stage: 0.1, :337).

Where the projection falls: after every optimiser step here, the projected gradient descent the
paper names; the authors' training loop projects once an epoch, after its training phase
(`utils/trainval.py`:140-142). The threshold is a buffer of last.pth, so a resumed run keeps it
rather than recomputing it from weights that have moved.

Their two stages: stage 1 trains the whole network with cross-entropy and a tuned weight decay;
stage 2 (`demo2_second-stage-training.py`:314-354) keeps the stage-1 backbone frozen and retrains
the classifier with class-balanced loss, MaxNorm (0.1) and weight decay 0.1, lr 0.01, 10 epochs. Here:
`--pretrained STAGE1.pth --freeze-backbone --objective CB --max-norm 0.1 --weight-decay 0.1`.
"""
import torch

import get_model
from toolkit.cli import UserError


class MaxNorm:
    """The projection of the classifier's per-class weight rows onto ||w_c|| <= threshold."""

    def __init__(self, model: torch.nn.Module, thresh: float):
        layer = get_model.classifier_layer(model)
        if not isinstance(layer, torch.nn.Linear):
            raise UserError(f"--max-norm bounds the per-class weight norms of a linear classifier; this model's "
                            f"classifier is a {type(layer).__name__} (a cosine classifier, such as LDAM's, has "
                            f"unit norms already); drop --max-norm or change --objective/--model_index")
        self.weight = layer.weight
        norms = self.norms().detach()
        self.threshold = norms.min() + thresh * (norms.max() - norms.min())

    def norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.weight.reshape(len(self.weight), -1), dim=1)

    @torch.no_grad()
    def project(self) -> None:
        """Rows above the threshold scaled to it; no host sync (a clamp, not a mask)."""
        scale = (self.threshold / self.norms().clamp_min(torch.finfo(self.weight.dtype).tiny)).clamp(max=1.0)
        self.weight.mul_(scale.view(-1, *[1] * (self.weight.dim() - 1)))

    def state_dict(self) -> dict:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        self.threshold = state["threshold"].to(self.weight.device)
