"""GHM-C: gradient harmonizing classification loss."""
import torch
import torch.nn.functional as F

from losses.base import Objective, declare
from toolkit.cli import number_in, positive_int
from toolkit.space import HyperParameter, Integer, Uniform


@declare("GHMC", "gradient harmonizing classification loss (--ghm-bins, --ghm-momentum)", hyper_parameters=[
    HyperParameter("--ghm-bins", 30, type=positive_int, search=Integer(5, 50),
                   help="GHMC: number of gradient-norm bins on [0, 1] (default: %(default)s)"),
    HyperParameter("--ghm-momentum", 0.75, type=number_in(0.0, 1.0, high_open=True), search=Uniform(0.0, 0.95),
                   help="GHMC: momentum of the moving bin counts, in [0, 1); 0 uses each batch alone "
                        "(default: %(default)s)")])
class GradientHarmonizing(Objective):
    """GHMC (Li et al., "Gradient Harmonized Single-stage Detector", AAAI 2019), softmax form.

    g_i = 1 - p_{i,y_i} (no gradient) falls in one of M equal bins on [0, 1]; beta_i =
    1 / (d_{b(i)} * m) with d_b the moving average (momentum mu) of bin b's fraction of the batch and
    m the number of bins non-empty in this batch (as in the reference code); loss = sum beta_i CE_i / N.

    The moving average: d_b is kept as bin b's fraction of the batch (count / N), initialised to the
    first batch's fractions; after that only the bins non-empty in the batch move,
    d_b <- mu d_b + (1 - mu) count_b / N, and an empty bin keeps its average, as in the reference
    (GHM_Detection, mmdetection/mmdet/core/loss/ghm_loss.py lines 42-52 at commit 3647287, and the
    same block of GHMC.forward in mmdetection's mmdet/models/losses/ghm_loss.py, which GHM_Detection
    uses as a submodule since 2019: `if num_in_bin > 0: acc_sum[i] = mmt * acc_sum[i] + ...`). The
    reference starts its moving counts at 0; the first-batch start is ours (the first batch is
    weighted by its own density; a bin empty in it starts at 0, as there). With a constant batch
    size N, N d_b is the reference's moving count and beta its tot / (acc_sum * n); keeping
    fractions means a smaller last batch is not up-weighted, and 1 bin is ERM for any batch size.
    """

    mixing_refusal = ("its weights come from each sample's gradient norm 1 - p_y, binned over the batch, which "
                      "needs one target class per sample")

    def __init__(self, bins: int, momentum: float):
        super().__init__()
        self.bins = bins
        self.momentum = momentum
        self.register_buffer("bin_fraction", torch.zeros(bins))
        self.register_buffer("initialised", torch.tensor(False))

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(args.ghm_bins, args.ghm_momentum)

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
        non_empty = batch_count > 0
        moved = self.momentum * self.bin_fraction + (1.0 - self.momentum) * batch_fraction
        moved = torch.where(non_empty, moved, self.bin_fraction)  # empty bins keep their average
        self.bin_fraction.copy_(torch.where(self.initialised, moved, batch_fraction))
        self.initialised.fill_(True)
        return 1.0 / (self.bin_fraction[bin_index] * non_empty.sum())
