"""One epoch of training or evaluation: device, precision, memory format.

The hot loop never waits for the device: running sums stay on the device and are read once an
epoch, and for the progress bar at most twice a second.
"""
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import loader
from cli import UserError, progress_bar

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


# ---------------------------------------------------------------- the engine

class NonFiniteLoss(UserError):
    pass


def check_finite(first_bad_batch: torch.Tensor, epoch: int):
    """Raise NonFiniteLoss when a batch of this epoch had a non-finite loss (one host sync)."""
    batch = int(first_bad_batch)
    if batch >= 0:
        raise NonFiniteLoss(f"the training loss became non-finite at epoch {epoch + 1}, batch {batch + 1}; "
                            f"the checkpoints of the last good epoch are kept; try a lower --lr, --warmup, "
                            f"or --precision fp32")


@dataclass
class EpochProgress:
    """How far an interrupted epoch got: batches done, and the running sums (loss * n, top-1
    correct, top-k correct, n)."""
    batch: int
    sums: torch.Tensor


@dataclass
class Engine:
    """What one epoch needs: the model, its loss, optimisers and how to run them."""
    model: torch.nn.Module
    criterion: torch.nn.Module
    normalise: torch.nn.Module
    device: torch.device
    precision: Precision
    optimizers: tuple = ()  # (main,) or (main, complement) for COT
    schedulers: tuple = ()
    scaler: object = None
    compiled: object = None  # torch.compile'd model, when asked for

    def __post_init__(self):
        self.memory_format = memory_format(self.model)
        self.forward = self.compiled or self.model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalise(images).contiguous(memory_format=self.memory_format)

    def step(self, optimizer, scheduler, loss):
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()

    def train_epoch(self, image_set, order, batch_size, generator, epoch, epochs, workers=2, progress=True,
                    done=None, stop_requested=lambda: False):
        """Train on `order` (image indices) with batch augmentation.

        Returns (the epoch's row, None); or, when stop_requested() turns true between two steps,
        (None, the EpochProgress to resume from). `done` is such a progress to resume from."""
        train_mode(self.model)
        self.criterion.train()
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(epoch, epochs)
        complement = getattr(self.criterion, "complement_objective", False)
        top_k = min(5, len(image_set.split.class_names))
        done = done or EpochProgress(0, torch.zeros(4))
        sums = done.sums.to(self.device)  # loss * n, top-1 correct, top-k correct, n
        first_bad_batch = torch.tensor(-1, device=self.device)
        lr = self.optimizers[0].param_groups[0]["lr"]
        remaining = order[done.batch * batch_size:]
        bar = progress_bar(loader.batches(image_set, remaining, batch_size, self.device, workers), progress,
                           initial=done.batch, total=-(-len(order) // batch_size),
                           desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
        shown = time.monotonic()
        for batch, (images, labels) in enumerate(bar, start=done.batch):
            if stop_requested():
                bar.close()
                check_finite(first_bad_batch, epoch)
                return None, EpochProgress(batch, sums.cpu())
            x = self.inputs(loader.random_crop_flip(images, generator))
            with autocast(self.device, self.precision):
                logits = self.forward(x)
            loss = self.criterion(logits, labels)
            lr = self.optimizers[0].param_groups[0]["lr"]
            self.step(self.optimizers[0], self.schedulers[0], loss)
            if complement:
                with autocast(self.device, self.precision):
                    second = self.forward(x)
                self.step(self.optimizers[1], self.schedulers[1], self.criterion.complement_loss(second, labels))
            with torch.no_grad():
                loss = loss.detach().float()
                bad = ~torch.isfinite(loss) & (first_bad_batch < 0)
                first_bad_batch = torch.where(bad, batch, first_bad_batch)
                sums += torch.stack([loss * len(labels), *correct_counts(logits.detach(), labels, top_k),
                                     torch.tensor(len(labels), device=self.device, dtype=torch.float32)])
            if progress and time.monotonic() - shown > PROGRESS_REFRESH_S:
                shown = time.monotonic()
                loss_sum, correct, _, seen = sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}")
        bar.close()
        check_finite(first_bad_batch, epoch)
        if hasattr(self.criterion, "end_epoch"):
            self.criterion.end_epoch()
        loss_sum, correct, correct_k, seen = sums.tolist()
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "acc": 100 * correct / seen,
               "top5acc": 100 * correct_k / seen, "lr": lr}
        return row, None

    @torch.inference_mode()
    def predict(self, image_set, batch_size, workers=2, progress=True, desc="evaluate") -> tuple:
        """Labels and float32 logits of every image of the set, in order, on the CPU."""
        self.model.eval()
        order = torch.arange(len(image_set))
        outputs = []
        for images, _ in progress_bar(loader.batches(image_set, order, batch_size, self.device, workers),
                                      progress, total=-(-len(order) // batch_size), desc=desc, unit="batch"):
            with autocast(self.device, self.precision):
                outputs.append(self.forward(self.inputs(images)).float())
        logits = torch.cat(outputs).cpu() if outputs else torch.empty(0, 0)
        return image_set.labels.cpu(), logits


def train_mode(model):
    """model.train(), except that BatchNorm layers whose weights are frozen keep their running
    statistics (a frozen backbone stays exactly as it was loaded)."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and not module.weight.requires_grad:
            module.eval()


def correct_counts(logits, labels, top_k):
    """How many samples have their label as the top-1, and within the top-k, prediction."""
    top = logits.topk(top_k, dim=1).indices
    hits = top == labels[:, None]
    return hits[:, 0].sum().float(), hits.any(dim=1).sum().float()


def lr_factor(milestones, gamma: float, warmup_epochs: int, steps_per_epoch: int):
    """The learning-rate multiplier at each optimiser step: linear warm-up over the first
    `warmup_epochs`, then times `gamma` at each milestone epoch (MultiStepLR's convention:
    milestone 60 lowers the rate from the 61st epoch on)."""
    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        decay = gamma ** sum(epoch >= m for m in milestones)
        if step < warmup_epochs * steps_per_epoch:
            return decay * (step + 1) / (warmup_epochs * steps_per_epoch)
        return decay
    return factor
