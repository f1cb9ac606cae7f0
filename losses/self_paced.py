"""SPBL: self-paced balance learning."""
import torch
import torch.nn.functional as F

from losses.base import Objective


class SelfPacedBalance(Objective):
    """SPBL, adapted to a loss from Yang et al., "Self-Paced Balance Learning for Clinical Skin
    Disease Recognition", IEEE TNNLS 2020.

    loss = sum_i v_i w_{y_i} CE_i / sum_i v_i, v_i = [CE_i <= lambda_{y_i}], where lambda_c is the
    r_t-quantile (torch.quantile's linear interpolation) of class c's per-sample CE over the previous
    epoch, and w_c proportional to 1 / H_c, H_c = n_c * exp(-mean CE of c's counted samples in the
    previous epoch), normalised so that sum_c n_c w_c = sum_c n_c (average 1 per training sample).
    r_t = start + (1 - start) * min(1, t / (full * epochs)), t 0-based.

    Decisions:
    - First epoch: every sample counts and w_c is proportional to 1 / n_c (the H_c formula with the
      not-yet-known mean CE taken equal for all classes); with equal class counts this is ERM.
    - When r reaches 1 every sample counts (lambda = +inf), not just those below last epoch's
      maximum, so the final phase trains on all data as the method intends.
    - A class with no sample recorded in the previous epoch keeps all its samples counted. Its mean
      CE for H_c falls back to the mean over its recorded samples when none of them counted, and to
      the mean over all counted samples when none was recorded.
    - end_epoch of epoch t computes the thresholds with r_{t+1}, using the epoch and the total from
      the last set_epoch. A batch where no sample counts gives loss 0 (no gradient).
    - The per-sample CE recorded during an epoch is consumed by end_epoch; a checkpoint written
      mid-epoch (Ctrl-C) carries it as the module's extra state.
    """

    def __init__(self, class_counts: torch.Tensor, start: float, full: float):
        super().__init__()
        self.start = start
        self.full = full
        counts = class_counts.float()
        self.register_buffer("class_counts", counts)
        self.register_buffer("thresholds", torch.full_like(counts, float("inf")))
        self.register_buffer("class_weight", self._normalise(-torch.log(counts)))
        self.register_buffer("first_epoch", torch.tensor(True))
        self.register_buffer("pace", torch.tensor(float(start)))
        self.register_buffer("epoch", torch.tensor(0))
        self.register_buffer("epochs", torch.tensor(0))
        self._records = []

    def pace_at(self, epoch: int, epochs: int) -> float:
        """r_t: rises linearly from `start` at epoch 0 to 1 at epoch full * epochs."""
        ramp = max(self.full * epochs, 1e-12)
        return self.start + (1.0 - self.start) * min(1.0, epoch / ramp)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch.fill_(epoch)
        self.epochs.fill_(epochs)
        self.pace.fill_(self.pace_at(epoch, epochs))

    def forward(self, logits, targets):
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        counted = (ce.detach() <= self.thresholds[targets]) | self.first_epoch
        self._records.append((ce.detach(), targets.detach(), counted))
        weighted = counted * self.class_weight[targets] * ce
        return weighted.sum() / counted.sum().clamp(min=1)

    def end_epoch(self, gather=None) -> None:
        """Turn the epoch's recorded CE into the next epoch's thresholds and class weights."""
        ce, classes, counted = self._take_records()
        if gather is not None:  # every process gathers, even one that recorded nothing
            ce, classes, counted = gather(ce), gather(classes), gather(counted)
        if len(ce) == 0:
            return
        self.thresholds.copy_(self._thresholds(ce, classes, self._next_pace()))
        hardness = self._mean_counted_ce(ce, classes, counted)  # log w_c = mean CE_c - log n_c, i.e. 1/H_c
        self.class_weight.copy_(self._normalise(hardness - torch.log(self.class_counts)))
        self.first_epoch.fill_(False)

    def get_extra_state(self) -> dict:
        """The records of an unfinished epoch, so that a run interrupted mid-epoch resumes exactly."""
        if not self._records:
            return {}
        ce, classes, counted = (torch.cat(parts).cpu() for parts in zip(*self._records))
        return {"ce": ce, "classes": classes, "counted": counted}

    def set_extra_state(self, state: dict) -> None:
        device = self.thresholds.device
        self._records = [tuple(state[k].to(device) for k in ("ce", "classes", "counted"))] if state else []

    def _next_pace(self) -> float:
        """r for the epoch after the last set_epoch's; the current r if set_epoch was never called."""
        if int(self.epochs) == 0:
            return float(self.pace)
        return self.pace_at(int(self.epoch) + 1, int(self.epochs))

    def _take_records(self):
        """The epoch's (CE, class, counted as 0/1) as three 1-D tensors; the record starts afresh."""
        records, self._records = self._records, []
        if not records:
            empty = self.thresholds.new_zeros(0)
            return empty, empty.long(), empty
        ce, classes, counted = (torch.cat(parts) for parts in zip(*records))
        return ce, classes, counted.float()

    def _thresholds(self, ce, classes, pace: float) -> torch.Tensor:
        if pace >= 1.0:
            return torch.full_like(self.thresholds, float("inf"))
        return per_class_quantile(ce, classes, len(self.thresholds), pace)

    def _mean_counted_ce(self, ce, classes, counted) -> torch.Tensor:
        def per_class_sum(values):
            return torch.zeros_like(self.thresholds).index_add_(0, classes, values)

        counted_sum, counted_n = per_class_sum(ce * counted), per_class_sum(counted)
        all_sum, all_n = per_class_sum(ce), per_class_sum(torch.ones_like(ce))
        overall = counted_sum.sum() / counted_n.sum().clamp(min=1)
        mean_all = torch.where(all_n > 0, all_sum / all_n.clamp(min=1), overall)
        return torch.where(counted_n > 0, counted_sum / counted_n.clamp(min=1), mean_all)

    def _normalise(self, log_weight: torch.Tensor) -> torch.Tensor:
        """exp(log_weight) scaled so sum_c n_c w_c = sum_c n_c; in log space, as mean CE can be huge."""
        log_counts = torch.log(self.class_counts)
        log_total = torch.logsumexp(log_counts, dim=0)
        return torch.exp(log_weight - torch.logsumexp(log_weight + log_counts, dim=0) + log_total)


def per_class_quantile(values: torch.Tensor, classes: torch.Tensor, num_classes: int, q: float) -> torch.Tensor:
    """torch.quantile(values[classes == c], q) (linear interpolation) for every class c at once;
    +inf for a class with no value. One sort instead of a loop of masked selections.
    """
    order = torch.argsort(values)
    order = order[torch.argsort(classes[order], stable=True)]
    ordered = values[order]
    counts = torch.bincount(classes, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    position = q * (counts - 1).clamp(min=0).to(values.dtype)
    lower, upper = position.floor(), position.ceil()
    last = len(values) - 1
    lower_value = ordered[(starts + lower.long()).clamp(0, last)]
    upper_value = ordered[(starts + upper.long()).clamp(0, last)]
    quantile = torch.lerp(lower_value, upper_value, position - lower)
    return torch.where(counts > 0, quantile, torch.full_like(quantile, float("inf")))
