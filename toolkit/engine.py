"""One epoch of training or evaluation: device, precision, memory format, distribution.

The hot loop never waits for the device: running sums stay on the device and are read once an
epoch, and for the progress bar at most twice a second.
"""
import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from toolkit import sam
from toolkit.augment import counted_labels
from toolkit.cli import UserError, progress_bar
from toolkit.data import Batches
from toolkit.small_map_conv import use_small_map_convolutions

PROGRESS_REFRESH_S = 0.5


# ---------------------------------------------------------------- device and precision

def pick_device(choice: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise UserError(f"--device '{choice}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {choice}: no CUDA GPU is visible to PyTorch here; use --device cpu")
    return device


def use_deterministic_algorithms():
    """Only deterministic kernels (warning where PyTorch has none), so a rerun repeats exactly."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def use_threads(threads: int | None = None):
    """--threads: PyTorch's CPU threads (None: its own choice, one per core). When other work
    leaves fewer idle cores than that, say so: threads that wait for a busy core spin, and an
    epoch can take many times as long as with one thread (measured: docs/new-user.md)."""
    if threads:
        torch.set_num_threads(threads)
    used, cores = torch.get_num_threads(), usable_cores()
    if used < 2 or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    idle = max(0, round(cores - min(load, others_running_now())))
    if used > idle:
        warnings.warn(f"the machine is busy (load average {load:.1f} on {cores} cores, about {idle} idle): "
                      f"{used} threads will wait for each other; --threads {max(1, idle)} is often much faster",
                      stacklevel=2)


def others_running_now(samples: int = 5, apart_s: float = 0.02) -> float:
    """Threads of other work runnable now (Linux: /proc/loadavg's running count, less this reader; the
    fewest of a few reads), or infinity where unknown. The 1-minute load average alone lags: for a
    minute after a training ends it still counts it, so the next script of a plan (3_run.sh) would
    call an idle machine busy."""
    counts = []
    for _ in range(samples):
        try:
            counts.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return math.inf
        time.sleep(apart_s)
    return min(counts)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs on which bf16 matrix work is faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16

    @property
    def dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"


def pick_precision(choice: str, device: torch.device) -> Precision:
    """`auto`: bf16 where the hardware runs it natively, fp16 (scaled) on older GPUs, else fp32."""
    if choice != "auto":
        if choice == "fp16" and device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        return Precision(choice)
    if device.type == "cuda":
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if device.type == "cpu" and cpu_has_native_bf16():
        return Precision("bf16")
    return Precision("fp32")


def autocast(device: torch.device, precision: Precision):
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def memory_format(model: torch.nn.Module):
    return torch.channels_last if has_convolutions(model) else torch.contiguous_format


def prepare_model(model: torch.nn.Module, device: torch.device, small_map_matmuls: bool = True) -> torch.nn.Module:
    """The model on `device`, channels_last, its small-map convolutions run as matmuls on CPU in
    bf16 (toolkit/small_map_conv.py; `small_map_matmuls=False` leaves them to PyTorch's kernels);
    parameters and state_dict unchanged."""
    if small_map_matmuls:
        use_small_map_convolutions(model)
    return model.to(device, memory_format=memory_format(model))


# ---------------------------------------------------------------- the engine

class NonFiniteLoss(UserError):
    pass


def check_finite(first_bad_batch: torch.Tensor, epoch: int):
    """Raise NonFiniteLoss when a batch of this epoch had a non-finite loss (one host sync)."""
    batch = int(first_bad_batch)
    if batch >= 0:
        raise NonFiniteLoss(f"the training loss became non-finite at epoch {epoch + 1}, batch {batch + 1}")


@dataclass
class EpochProgress:
    """How far an interrupted epoch got: batches done, and the running sums (loss * n, top-1
    correct, top-k correct, n)."""
    batch: int
    sums: torch.Tensor


@dataclass
class Engine:
    """What one epoch needs: the model, its loss, optimisers and how to run them.

    `model` is the plain module (its state_dict is what checkpoints hold); `forward` is what runs
    it: the model itself, or its DistributedDataParallel and/or torch.compile wrapper. Batches come
    finished (data.Batches): the engine only runs the model on them, after `mix` (augment.Mixing:
    mixup, cutmix) where one is set, which turns the labels into MixedTargets for the objective."""
    model: torch.nn.Module
    criterion: torch.nn.Module
    device: torch.device
    precision: Precision
    optimizers: tuple = ()  # one for each of the criterion's step_losses()
    lr_factor: object = None  # fractional epoch -> learning-rate multiplier
    scaler: object = None
    forward: object = None
    distributed: "Distributed" = None
    mix: object = None  # (inputs, labels, generator) -> (inputs, MixedTargets), or None
    update_frozen_bn: bool = False  # frozen BatchNorm layers update their running statistics too
    sam_rho: float | None = None  # --sam: each optimiser step becomes SAM's two-pass step (toolkit/sam.py)
    max_norm: object = None  # --max-norm: weight_balancing.MaxNorm, projected after every optimiser step

    def __post_init__(self):
        if self.forward is None:  # not `or`: a compiled Sequential has no truth value
            self.forward = self.model
        self.distributed = self.distributed or Distributed()

    def set_lr(self, progress: float) -> float:
        """Set every optimiser's rate for this point of training (epochs, fractional); returns it."""
        factor = self.lr_factor(progress)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        return self.optimizers[0].param_groups[0]["lr"]

    def backward(self, optimizer, loss):
        optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def update(self, optimizer):
        """The optimiser's step with the gradients in place (through the scaler under fp16)."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        if self.max_norm is not None:
            self.max_norm.project()

    def step(self, optimizer, loss):
        self.backward(optimizer, loss)
        self.update(optimizer)

    def sam_step(self, optimizer, step_loss, x, labels, loss):
        """SAM (toolkit/sam.py): gradients at w, the same batch again at w + e with BatchNorm's
        statistics kept, then the optimiser's step from w with the second pass's gradients."""
        self.backward(optimizer, loss)
        saved = sam.ascend(optimizer, self.sam_rho)
        with sam.batchnorm_statistics_kept(self.model):
            perturbed = self.loss_of(step_loss, x, labels)[1]
        self.backward(optimizer, perturbed)
        sam.descend(saved)
        self.update(optimizer)

    def loss_of(self, step_loss, x, labels) -> tuple:
        with autocast(self.device, self.precision):
            logits = self.forward(x)
        return logits, step_loss(logits, labels)

    def steps(self, step_losses, x, labels) -> tuple:
        """One optimiser step for each of the objective's step losses, each on its own forward
        pass (two with --sam); returns the first pass's logits and loss (the ones logged, at the
        unperturbed weights). `labels` is a tensor, or MixedTargets for a mixed batch."""
        logged = None
        for optimizer, step_loss in zip(self.optimizers, step_losses, strict=True):
            logits, loss = self.loss_of(step_loss, x, labels)
            if self.sam_rho is not None:
                self.sam_step(optimizer, step_loss, x, labels, loss)
            else:
                self.step(optimizer, loss)
            logged = logged or (logits, loss)
        return logged

    def train_epoch(self, batches: Batches, order, batch_size, generator, epoch, epochs, progress=True,
                    done=None, stop_requested=lambda: False):
        """Train on `order` (this process's image indices), augmented with `generator`'s draws.

        Returns (the epoch's row, None); or, when stop_requested() turns true between two steps,
        (None, the EpochProgress to resume from). `done` is such a progress to resume from."""
        train_mode(self.model, self.update_frozen_bn)
        self.criterion.train()
        self.criterion.set_epoch(epoch, epochs)
        step_losses = self.criterion.step_losses()
        top_k = min(5, batches.num_classes)
        done = done or EpochProgress(0, torch.zeros(4))
        sums = done.sums.to(self.device)  # loss * n, top-1 correct, top-k correct, n
        first_bad_batch = torch.tensor(-1, device=self.device)
        steps = -(-len(order) // batch_size)
        lr = self.optimizers[0].param_groups[0]["lr"]
        finished = batches(order[done.batch * batch_size:], batch_size, generator)
        bar = progress_bar(range(done.batch, steps), progress, initial=done.batch, total=steps,
                           desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
        shown = time.monotonic()
        for batch in bar:
            if self.distributed.agree(stop_requested, batch):  # before the batch is made: its draws stay unused
                bar.close()
                check_finite(self.distributed.max(first_bad_batch), epoch)
                return None, EpochProgress(batch, sums.cpu())
            x, labels = next(finished)
            x, targets = self.mix(x, labels, generator) if self.mix is not None else (x, labels)
            lr = self.set_lr(epoch + (batch + 1) / steps)
            logits, loss = self.steps(step_losses, x, targets)
            with torch.no_grad():
                loss = loss.detach().float()
                bad = ~torch.isfinite(loss) & (first_bad_batch < 0)
                first_bad_batch = torch.where(bad, batch, first_bad_batch)
                sums += torch.stack([loss * len(labels), *correct_counts(logits.detach(), counted_labels(targets),
                                                                         top_k),
                                     torch.tensor(len(labels), device=self.device, dtype=torch.float32)])
            if progress and time.monotonic() - shown > PROGRESS_REFRESH_S:
                shown = time.monotonic()
                loss_sum, correct, _, seen = sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}")
        bar.close()
        check_finite(self.distributed.max(first_bad_batch), epoch)
        self.criterion.end_epoch(self.distributed.gather if self.distributed.active else None)
        loss_sum, correct, correct_k, seen = self.distributed.sum(sums).tolist()
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "acc": 100 * correct / seen,
               "top5acc": 100 * correct_k / seen, "lr": lr}
        return row, None

    @torch.inference_mode()
    def predict(self, batches: Batches, batch_size, progress=True, desc="evaluate") -> tuple:
        """Labels and float32 logits of every image of the set, in order, on the CPU. Under DDP each
        process evaluates every world-th image and all of them get the whole, each image once."""
        self.model.eval()
        order = torch.arange(self.distributed.rank, len(batches), self.distributed.world)
        outputs = []
        for x, _ in progress_bar(batches(order, batch_size), progress, total=-(-len(order) // batch_size),
                                 desc=desc, unit="batch"):
            outputs.append(self.logits(x))
        logits = torch.cat(outputs).cpu() if outputs else torch.empty(0, batches.num_classes)
        if self.distributed.active:
            order, logits = self.distributed.gather(order), self.distributed.gather(logits)
            logits = logits[torch.argsort(order)]
        return batches.labels.cpu(), logits

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits of finished inputs, in eval mode as the caller set it."""
        with autocast(self.device, self.precision):
            return self.forward(x).float()


def train_mode(model, update_frozen_bn=False):
    """model.train(), except that BatchNorm layers whose weights are frozen keep their running
    statistics (a frozen backbone stays exactly as it was loaded), unless `update_frozen_bn`: then
    they normalise with the batch's statistics and update the running ones, as MiSLAS's stage 2
    does with shift_bn (dvlab-research/MiSLAS, train_stage2.py:310-313: model.train() on the
    backbone whose parameters no optimiser holds)."""
    model.train()
    if update_frozen_bn:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and not module.weight.requires_grad:
            module.eval()


def correct_counts(logits, labels, top_k):
    """How many samples have their label as the top-1, and within the top-k, prediction."""
    top = logits.topk(top_k, dim=1).indices
    hits = top == labels[:, None]
    return hits[:, 0].sum().float(), hits.any(dim=1).sum().float()


def lr_schedule(milestones, gamma: float, warmup_epochs: int):
    """The learning-rate multiplier at a point of training, in epochs (2.5 = half-way through the
    third): a linear warm-up over the first `warmup_epochs`, and times `gamma` at each milestone
    (MultiStepLR's convention: milestone 60 lowers the rate from the 61st epoch on). A pure
    function of the position, so a resumed run needs no scheduler state."""
    def factor(progress: float) -> float:
        decay = gamma ** sum(int(progress - 1e-9) >= m for m in milestones)
        if progress < warmup_epochs:
            return decay * progress / warmup_epochs
        return decay
    return factor


# ---------------------------------------------------------------- distribution (torchrun)

@dataclass(frozen=True)
class Distributed:
    """This process's place among `torchrun`'s processes; one process is rank 0 of a world of 1."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    stop_check_every: int = 8  # steps between agreeing on a stop request (a collective each time)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(tensor)
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's tensor (of any length), concatenated in rank order."""
        if not self.active:
            return tensor
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, tensor.cpu())
        return torch.cat(parts).to(tensor.device)

    def agree(self, stop_requested, step: int) -> bool:
        """Whether to stop now: at once alone; under DDP every few steps, all processes together."""
        if not self.active:
            return stop_requested()
        if step % self.stop_check_every:
            return False
        device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        return bool(self.max(torch.tensor(int(stop_requested()), device=device)))


def start_distributed(device_choice: str) -> tuple:
    """(Distributed, device) for this process: under torchrun, join the process group (NCCL on
    GPUs, gloo on CPU), one GPU per process; otherwise a single process on --device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), pick_device(device_choice)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = pick_device(device_choice)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank), device


def stop_distributed(distributed: Distributed):
    if distributed.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap_for_distribution(model: torch.nn.Module, distributed: Distributed, device: torch.device):
    if not distributed.active:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
