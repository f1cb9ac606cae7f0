"""SPBL: self-paced balance learning, as its authors' code does it, adapted to training the network."""
import math

import torch
import torch.nn.functional as F

import argparse

from losses.base import Objective, declare
from toolkit.cli import number_in
from toolkit.space import Choice, HyperParameter, LogUniform

PACES = (0.5, 0.75, 0.9, 1.0, 1.0)  # cfg.py line 14, add_ratios
MAX_WEIGHT = 10.0  # data_process.py line 221: ConsistentCostMatrixGen(K, 10, ...)
RESAMPLE_BOUND = 3  # data_process.py lines 254-257: 3 * ceil(mean count)
DRAWS_STREAM = 0x5DEECE66D  # keeps SPBL's per-epoch draws apart from the loader's epoch generator


WITHDRAWN = ("belonged to SPBL's withdrawn definition (loss-quantile thresholds) and is gone; SPBL now trains in "
             "stages of pace shares: use --spbl-paces R [R ...] (default: 0.5 0.75 0.9 1 1), --spbl-max-weight W "
             "(default: 10) and --spbl-resample / --no-spbl-resample")


@declare("SPBL", "self-paced balance learning: paced per-class selection by rank, bounded class weights and "
                 "resampling by complexity (--spbl-paces, --spbl-max-weight, --spbl-resample)",
         needs_counts=True, hyper_parameters=[
             HyperParameter("--spbl-paces", PACES, type=number_in(0.0, 1.0, low_open=True),
                            options={"nargs": "+", "metavar": "R"},
                            help="SPBL: the share r in (0, 1] of each class (its easiest ceil(r n_c) images) that "
                                 "trains in each stage after a first stage of plain CE on every image; the 1 + "
                                 "(number of R) stages split the epochs evenly (default: 0.5 0.75 0.9 1 1, the "
                                 "authors')"),
             HyperParameter("--spbl-max-weight", MAX_WEIGHT, type=number_in(1.0, math.inf, high_open=True),
                            search=LogUniform(1.0, 30.0),
                            help="SPBL: class weights run from 1 (least complex class) to this (most complex), by "
                                 "rank, before they are scaled to average 1 per training image; 1 weighs classes "
                                 "equally (default: %(default)s)"),
             HyperParameter("--spbl-resample", True, search=Choice((True, False)),
                            options={"action": argparse.BooleanOptionalAction},
                            help="SPBL: the authors' curriculum reconstruction, per-class draws handed out by "
                                 "complexity rank within bounds (default: on)")],
         withdrawn={"--spbl-start": WITHDRAWN, "--spbl-full": WITHDRAWN})
class SelfPacedBalance(Objective):
    """SPBL (Yang et al., "Self-Paced Balance Learning for Clinical Skin Disease Recognition", IEEE
    TNNLS 2020), following the authors' code, github.com/xpwu95/SPBL_Pytorch at bfcb208 (cited as
    file:line, files under spbl/examples/ and spbl/reid/utils/data/).

    What their code does (spbl.py `spaco`):
    - A first network training with plain cross-entropy on a seed split (train_ratio 0.2,
      data_process.py:264-284; spbl.py:44-45, weight=None), then one training per pace share
      r = 0.5, 0.75, 0.9, 1.0, 1.0 (cfg.py:14; the loop spbl.py:86-109), each of config.epochs = 50
      epochs (cfg.py:12), each continuing from the previous network (spbl.py:180-181).
    - At each pace, `sel_idx_wspl` (data_process.py:182-261): each class c takes its
      ceil(r * m_c) samples with the highest true-class probability (:196-203, selection by rank
      within the class); the complexity term 1/H_c = m_c / exp(mean of -log p over those selected)
      (:205-209, m_c the class's whole count; :211-218 rescale it onto [min m, max m] and round it
      up, which keeps only its order) ranks the classes.
    - Class costs from ConsistentCostMatrixGen(K, 10, CD) (data_process.py:220-224 with
      ConsistentCostMatrixGen.m:34-37, 54-63): values drawn in [1, 10], divided by their minimum,
      sorted, and given by rank of CD = 1/H_c: the class with the largest 1/H_c (many, easy samples:
      the least complex) gets the smallest cost 1, the one with the smallest 1/H_c the largest cost;
      the classes in between are shuffled at random (.m:55-57).
    - "Curriculum reconstruction" (data_process.py:229-258, applied in spbl.py:117-137): the sorted
      selected counts are handed out by complexity rank, the least complex class getting the
      smallest count and the most complex the largest; a class gains at most 100 samples
      (random repeats), and only a class holding at least 3 * ceil(mean count) is under-sampled,
      never below that.
    - In their pipeline the selection trains the CNN (spbl.py:105-109, still with weight=None),
      while the costs (as sample weights, spbl.py:155-165) and the reconstructed sample set feed an
      SVM on the CNN's features; the probabilities that rank samples are that SVM's
      (spbl.py:72-75, 184-187).

    Here there is no SVM: the same quantities act on the network's training. That is this toolkit's
    adaptation:
    - Stages: 1 + len(paces) stages (default 6) split the epochs evenly, as the authors give every
      training the same number of epochs: 0-based epoch e of E is in stage floor(e * S / E), so each
      stage has floor(E / S) or ceil(E / S) epochs (30 epochs: 5 each); with E < S some stages are
      skipped, the last always runs. Stage 0 is plain CE on every image (their first training;
      the whole training set is the seed here, and --sampler applies). Stage k >= 1 uses share
      r = paces[k - 1]. There is one learning-rate schedule over all stages.
    - At the first epoch of a stage k >= 1, one evaluation pass (eval mode, no augmentation) gives
      the network's softmax p. Each class c keeps its ceil(r * n_c) samples with the highest
      p_{i,c} at its true class (ties: lower index first), ranked by log((1 - p_y) / p_y), which
      keeps its resolution where p_y rounds to 1. Only those images are drawn in the stage: the
      others cost no compute. The selection, the class weights and the class draws hold for the
      stage (as the authors fix them for a whole training).
    - Complexity H_c = exp(mean CE over c's selected) / n_c (the code's 1/H_c inverted); the rank
      is all that is used, as in the code. Class weights by rank, deterministic: the costs
      1 + (max_weight - 1) * rank_c / (K - 1), rank 0 the least complex (tied classes share their
      mean rank), are in [1, max_weight] like the code's, evenly spaced instead of random, and
      every class is ordered (the code orders only the extremes). They are then scaled so that
      sum_c n_c w_c = sum_c n_c (average 1 over the training samples). The loss of a batch is
      sum_i v_i w_{y_i} CE_i / sum_i v_i w_{y_i}, v_i the number of times image i is drawn (0 for
      the unselected, which are not in the batch at all), so the scale cancels and the weights only
      move emphasis between classes.
    - Curriculum reconstruction (`resample`, on by default) sets how many draws each class gets in
      the stage: the code's rule, with its cap of 100 extra samples taken relative, at most
      3 * ceil(mean selected count) extra (100 is about 3 times SD-198's mean class size of 33
      images), the same bound as its under-sampling floor. The draws of a class are spread as evenly
      as possible over its selected images (whole rounds, the remainder to images picked at random),
      and re-picked every epoch from (the seed, the epoch) instead of fixed for the training, so an
      under-sampled class shows different images each epoch. Without it each selected image is
      drawn once an epoch.
    - Classes with equal counts and any complexities are not resampled; `paces` all 1 and
      max_weight 1 (and no resampling, or equal counts) is plain CE on every image.

    The training loop reaches the selection through `epoch_draws`, called before set_epoch at the
    start of every epoch; a loop that does not call it trains plain CE on every image (stage 0).
    State (stage, selection, class draws, weights, the complexities and the seed of the per-epoch
    draws) lives in buffers, so a resumed run, also one resumed mid-epoch, draws exactly what the
    uninterrupted run drew: a stage's evaluation pass is made only when the stored stage differs.
    Under torchrun every process gets the same logits and seed, so it computes the same draws and
    nothing needs gathering.
    """

    mixing_refusal = ("it selects each class's easiest images and weighs classes by the complexity of their "
                      "selected images, which needs one class per sample")

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(class_counts, args.spbl_paces, args.spbl_max_weight, args.spbl_resample)

    @classmethod
    def last_change(cls, args) -> int:
        """The epoch (counted from 1) its last stage begins."""
        stages = len(args.spbl_paces) + 1
        return next(epoch + 1 for epoch in range(args.epochs) if epoch * stages // args.epochs == stages - 1)

    def __init__(self, class_counts: torch.Tensor, paces=PACES, max_weight: float = MAX_WEIGHT,
                 resample: bool = True):
        super().__init__()
        self.paces = tuple(float(r) for r in paces)
        if not self.paces or not all(0.0 < r <= 1.0 for r in self.paces):
            raise ValueError(f"SPBL's paces must be shares in (0, 1], got {paces}")
        if not max_weight >= 1.0:
            raise ValueError(f"SPBL's max_weight must be at least 1, got {max_weight}")
        self.max_weight = float(max_weight)
        self.resample = bool(resample)
        counts = torch.as_tensor(class_counts).round().long()
        num_images = int(counts.sum())
        self.register_buffer("class_counts", counts)
        self.register_buffer("stage", torch.tensor(-1))  # -1: no stage prepared yet
        self.register_buffer("selected", torch.ones(num_images, dtype=torch.bool))
        self.register_buffer("class_draws", counts.clone())
        self.register_buffer("log_complexity", torch.zeros(len(counts)))
        self.register_buffer("class_weight", torch.ones(len(counts)))
        # the seed torch.manual_seed(--seed) set, read without drawing from (and shifting) the stream
        self.register_buffer("seed", torch.tensor(torch.initial_seed() % 2 ** 62))

    # ------------------------------------------------------------ stages

    @property
    def stages(self) -> int:
        return len(self.paces) + 1

    def stage_at(self, epoch: int, epochs: int) -> int:
        """The stage of 0-based `epoch` out of `epochs`: floor(epoch * stages / epochs)."""
        return min(self.stages - 1, epoch * self.stages // max(epochs, 1))

    def share_of(self, stage: int) -> float:
        """The pace share r of a stage; stage 0 (and before any) trains on every image."""
        return 1.0 if stage <= 0 else self.paces[stage - 1]

    # ------------------------------------------------------------ the objective's hooks

    def forward(self, logits, targets):
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        weights = self.class_weight[targets]
        return (weights * ce).sum() / weights.sum()

    def epoch_draws(self, epoch: int, epochs: int, labels: torch.Tensor, training_logits) -> torch.Tensor | None:
        """How often each training image is drawn this epoch: None in stage 0 (--sampler's draws),
        then the stage's selection with its class draws. A new stage's first epoch calls
        training_logits() once and fixes the stage's selection, weights and class draws."""
        stage = self.stage_at(epoch, epochs)
        labels = labels.cpu().long()
        if stage != int(self.stage):
            if stage == 0:
                self.selected.fill_(True)
                self.class_draws.copy_(self.class_counts)
                self.log_complexity.zero_()
                self.class_weight.fill_(1.0)
            else:
                self._prepare_stage(stage, labels, training_logits())
            self.stage.fill_(stage)
        if stage == 0:
            return None
        return spread_draws(self.selected.cpu(), labels, self.class_draws.cpu(),
                            self._generator(epoch))

    def epoch_log(self) -> dict:
        """train.csv's extra columns: the stage's pace share and the largest / smallest class weight."""
        return {"spbl_share": self.share_of(int(self.stage)),
                "max_class_weight": float(self.class_weight.max()),
                "min_class_weight": float(self.class_weight.min())}

    # ------------------------------------------------------------ internals

    def _prepare_stage(self, stage: int, labels: torch.Tensor, logits: torch.Tensor) -> None:
        counts = self.class_counts.cpu()
        num_classes = len(counts)
        if labels.shape != self.selected.shape or tuple(logits.shape) != (len(labels), num_classes):
            raise ValueError(f"SPBL was built for {len(self.selected)} training images of {num_classes} "
                             f"classes; got labels {tuple(labels.shape)} and logits {tuple(logits.shape)}")
        if not torch.equal(torch.bincount(labels, minlength=num_classes), counts):
            raise ValueError("SPBL: the labels' class counts differ from the counts it was built with")
        selected, mean_ce = rank_selection(logits, labels, self.share_of(stage))
        taken = torch.bincount(labels[selected], minlength=num_classes)
        log_complexity = mean_ce - counts.double().log()  # log H_c = mean CE_c - log n_c
        draws = reconstructed_counts(taken, log_complexity) if self.resample else taken
        self.selected.copy_(selected)
        self.class_draws.copy_(draws)
        self.log_complexity.copy_(log_complexity.float())
        self.class_weight.copy_(class_weights(log_complexity, counts, self.max_weight).float())

    def _generator(self, epoch: int) -> torch.Generator:
        generator = torch.Generator()
        generator.manual_seed(((int(self.seed) * 1_000_003 + epoch) ^ DRAWS_STREAM) % 2 ** 63)
        return generator


# ---------------------------------------------------------------- the pieces, each a pure function

def selected_count(share: float, counts: torch.Tensor) -> torch.Tensor:
    """ceil(r * n_c), at least 1 and at most n_c (data_process.py:200-201); the 1e-9 keeps
    floating-point noise such as 0.9 * 70 = 63.00000000000001 from taking one more."""
    wanted = torch.ceil(share * counts.double() - 1e-9).long()
    return torch.minimum(wanted.clamp(min=1), counts)


def rank_selection(logits: torch.Tensor, labels: torch.Tensor, share: float) -> tuple:
    """(selected: bool per image, mean CE of each class's selected): every class keeps its
    ceil(share * n_c) images of highest true-class probability, ties to the lower index. The rank
    uses log((1 - p_y) / p_y) = logsumexp_{j != y} z_j - z_y in float64, exact where p_y rounds to 1;
    CE = log(1 + exp(that)). A non-finite score ranks last."""
    logits = logits.double()
    num_classes = logits.shape[1]
    is_target = torch.arange(num_classes) == labels[:, None]
    target = logits.gather(1, labels[:, None]).squeeze(1)
    log_odds = torch.logsumexp(logits.masked_fill(is_target, float("-inf")), dim=1) - target
    log_odds = torch.nan_to_num(log_odds, nan=float("inf"))
    ce = torch.logaddexp(torch.zeros_like(log_odds), log_odds)
    order = torch.sort(log_odds, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # by class, easiest first
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    classes = labels[order]
    place = torch.arange(len(order)) - starts[classes]
    selected = torch.zeros(len(labels), dtype=torch.bool)
    selected[order[place < selected_count(share, counts)[classes]]] = True
    taken = torch.bincount(labels[selected], minlength=num_classes)
    ce_sum = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels[selected], ce[selected])
    return selected, ce_sum / taken.clamp(min=1)


def complexity_ranks(log_complexity: torch.Tensor) -> torch.Tensor:
    """Each class's rank by complexity, 0 the least complex; tied classes share their mean rank."""
    below = (log_complexity[None, :] < log_complexity[:, None]).sum(1)
    tied = (log_complexity[None, :] == log_complexity[:, None]).sum(1)
    return below.double() + (tied.double() - 1) / 2


def class_weights(log_complexity: torch.Tensor, counts: torch.Tensor, max_weight: float) -> torch.Tensor:
    """Costs 1 + (max_weight - 1) rank / (K - 1) in [1, max_weight] by complexity rank, then scaled
    to average 1 over the training samples (sum_c n_c w_c = sum_c n_c)."""
    ranks = complexity_ranks(log_complexity)
    costs = 1.0 + (max_weight - 1.0) * ranks / max(len(ranks) - 1, 1)
    counts = counts.double()
    return costs * counts.sum() / (counts * costs).sum()


def reconstructed_counts(taken: torch.Tensor, log_complexity: torch.Tensor,
                         bound: int = RESAMPLE_BOUND) -> torch.Tensor:
    """The curriculum reconstruction of data_process.py:229-258: the selected counts, sorted, are
    handed out by complexity rank (the least complex class gets the smallest; equal complexities
    in order of count, so that they keep theirs); a class then gains at most bound * ceil(mean)
    draws, and only a class holding at least bound * ceil(mean) loses any, never going below it."""
    order = torch.sort(taken, stable=True).indices
    order = order[torch.sort(log_complexity[order], stable=True).indices]  # least complex first
    handed = torch.empty_like(taken)
    handed[order] = torch.sort(taken).values
    limit = bound * math.ceil(int(taken.sum()) / len(taken))
    change = handed - taken
    gain = change.clamp(max=limit)
    loss = torch.where(taken < limit, 0, torch.where(handed < limit, limit - taken, change))
    return taken + torch.where(change > 0, gain, torch.where(change < 0, loss, 0))


def spread_draws(selected: torch.Tensor, labels: torch.Tensor, class_draws: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """Per-image draws: class c's class_draws[c] spread over its selected images, whole rounds
    each, the remainder one more for images picked at random (from `generator`)."""
    images = torch.nonzero(selected).flatten()
    classes = labels[images]
    members = torch.bincount(classes, minlength=len(class_draws))
    rounds = torch.div(class_draws, members.clamp(min=1), rounding_mode="floor")
    extra = class_draws - rounds * members
    order = torch.randperm(len(images), generator=generator)
    order = order[torch.sort(classes[order], stable=True).indices]
    starts = torch.cumsum(members, 0) - members
    place = torch.arange(len(order)) - starts[classes[order]]
    draws = torch.zeros(len(labels), dtype=torch.long)
    draws[images[order]] = rounds[classes[order]] + (place < extra[classes[order]]).long()
    return draws
