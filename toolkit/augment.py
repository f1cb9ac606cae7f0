"""Batch augmentations on the device: whole uint8 batches, per-image random parameters drawn
from a seeded generator, so an epoch's augmentation repeats exactly after a resume.

Every augmentation is a function (uint8 batch, generator) -> uint8 batch that data.Batches calls
on the gathered batch (`batch_augmentation` picks it from --augment); mixup and cutmix (`Mixing`)
act on the finished batch where the engine has images and labels, and hand the objective a
`losses.base.MixedTargets`. Every draw comes from the epoch generator the engine passes in, in the
order each docstring states, so a fixed seed gives the same batch twice and after a resume.

--augment:
- `pad-crop-flip` (the default): CIFAR's 4-pixel zero-padded random crop and horizontal flip.
- `resized-crop-flip`: torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, its 10
  attempts then the centre-crop fallback) and flip, all boxes cut and resized in one
  `torchvision.ops.roi_align` call. The training split is cached at 8/7 of the training size
  (`cache_size`: 256 for 224, 37 for 32, as in ImageNet's "resize 256, crop 224"), so a crop of
  the whole image is a mild down-sampling and a small crop is cut from a copy 8/7 sharper than
  the training size rather than up-sampled from it; the validation and test splits stay at the
  training size.
- `randaugment`: `resized-crop-flip`, then RandAugment (Cubuk et al. 2020) with torchvision's 14
  operations and 31 magnitude bins; each image draws its own operations and signs, and each
  (operation, sign) group of a slot runs as one sub-batch through torchvision.transforms.v2's
  kernels, on the device.
- `none`: the images as they are.
"""
import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from losses.base import MixedTargets

CROP_PADDING = 4
AUGMENTATIONS = ("pad-crop-flip", "resized-crop-flip", "randaugment", "none")
DEFAULT = "pad-crop-flip"
CACHE_ENLARGEMENT = 8 / 7  # the training cache of the resized crops: "resize 256, crop 224"
RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
RESIZED_CROP_ATTEMPTS = 10
RANDAUGMENT_N, RANDAUGMENT_M = 2, 9  # torchvision's RandAugment defaults: 2 operations of magnitude bin 9
MAGNITUDE_BINS = 31  # torchvision's num_magnitude_bins: --randaugment-m is a bin, 0 to 30
CUTMIX_SWITCH_PROB = 0.5  # with both --mixup and --cutmix, cutmix for half the batches (timm's switch_prob)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING):
    """Random crop with zero padding, then random horizontal flip, for a whole uint8 batch.

    The draws, in this order: vertical offsets, horizontal offsets (each in [0, 2*padding]),
    then flips (uniform < 0.5). Returns a channels_last uint8 tensor of the input's shape."""
    n, _, height, width = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    padded = F.pad(images, (padding,) * 4)
    rows = dy[:, None] + torch.arange(height, device=device)
    cols = dx[:, None] + torch.arange(width, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    picked = padded[torch.arange(n, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # (N, H, W, C) memory viewed as NCHW: channels_last


# ---------------------------------------------------------------- choosing one

def cache_size(name: str, height: int, width: int) -> tuple:
    """The size the training split is decoded and cached at for augmentation `name`."""
    if name in ("resized-crop-flip", "randaugment"):
        return round(height * CACHE_ENLARGEMENT), round(width * CACHE_ENLARGEMENT)
    return height, width


def batch_augmentation(name: str, height: int, width: int, randaugment_n=RANDAUGMENT_N, randaugment_m=RANDAUGMENT_M):
    """The (uint8 batch, generator) -> uint8 batch of --augment `name`, giving height x width
    images (None for `none`)."""
    if name == "pad-crop-flip":
        return random_crop_flip  # looked up now, so a test may wrap the module's function
    if name == "resized-crop-flip":
        return ResizedCropFlip(height, width)
    if name == "randaugment":
        return Chain(ResizedCropFlip(height, width), RandAugment(randaugment_n, randaugment_m))
    if name == "none":
        return None
    raise ValueError(f"unknown augmentation {name!r}")


@dataclass
class Chain:
    """Augmentations one after another, each drawing from the same generator in turn."""
    first: object
    second: object

    def __call__(self, images, generator):
        return self.second(self.first(images, generator), generator)


def describe(settings: dict) -> str:
    """A run's augmentation in a few words, from its args.json: "randaugment n2 m9 + mixup 0.2".
    Runs from before --augment existed trained with pad-crop-flip and no mixing."""
    name = settings.get("augment") or DEFAULT
    parts = [name + (f" n{settings.get('randaugment_n', RANDAUGMENT_N)} m{settings.get('randaugment_m', RANDAUGMENT_M)}"
                     if name == "randaugment" else "")]
    mixes = [f"{kind} {settings[kind]:g}" for kind in ("mixup", "cutmix") if settings.get(kind)]
    prob = settings.get("mix_prob", 1.0)
    return " + ".join(parts + mixes) + (f" (p {prob:g})" if mixes and prob != 1.0 else "")


# ---------------------------------------------------------------- resized crop

def resized_crop_boxes(n: int, height: int, width: int, generator, device="cpu", scale=RESIZED_CROP_SCALE,
                       ratio=RESIZED_CROP_RATIO, attempts: int = RESIZED_CROP_ATTEMPTS) -> tuple:
    """torchvision's RandomResizedCrop.get_params for n images at once: (top, left, h, w), long.

    Per image, up to `attempts` candidates of area fraction ~ U(scale) and aspect w/h ~
    exp(U(log ratio)), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first
    that fits is taken, at a uniform position; when none fits, the centre crop of the whole image
    clipped to the ratio range. The draws, in this order: all area fractions (n x attempts), all
    log-aspects (n x attempts), then the positions (n x 2: vertical, horizontal)."""
    area = height * width
    fraction = torch.rand(n, attempts, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(torch.rand(n, attempts, generator=generator, device=device) * (log_high - log_low) + log_low)
    position = torch.rand(n, 2, generator=generator, device=device)
    w = torch.round(torch.sqrt(area * fraction * aspect)).long()
    h = torch.round(torch.sqrt(area * fraction / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    found = fits.any(dim=1)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), fallback_w)
    h = torch.where(found, h.gather(1, first).squeeze(1), fallback_h)
    top = torch.minimum((position[:, 0] * (height - h + 1)).long(), height - h)
    left = torch.minimum((position[:, 1] * (width - w + 1)).long(), width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return top, left, h, w


def crop_and_resize(images: torch.Tensor, top, left, h, w, height: int, width: int, flip=None) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to height x width, bilinear, mirrored where
    `flip`, in one grid_sample call; uint8 out.

    The sample points are those of torchvision's resized_crop (crop, then resize with half-pixel
    centres, antialias off): output pixel k samples the box at (k + 1/2) * h / height - 1/2,
    clamped to the box, so a box edge repeats its own pixels and never reads beyond them. A
    flipped image takes its columns in the reverse order, the same points as crop, resize, flip."""
    n, _, source_h, source_w = images.shape
    device = images.device
    rows = (torch.arange(height, device=device) + 0.5) / height
    cols = (torch.arange(width, device=device) + 0.5) / width
    cols = cols.expand(n, width) if flip is None else torch.where(flip[:, None], cols.flip(0), cols)
    top, left, h, w = (v.to(device)[:, None].float() for v in (top, left, h, w))
    y = torch.minimum(torch.maximum(top + rows * h - 0.5, top), top + h - 1)
    x = torch.minimum(torch.maximum(left + cols * w - 0.5, left), left + w - 1)
    grid = torch.stack(torch.broadcast_tensors(((x + 0.5) * 2 / source_w - 1)[:, None, :],
                                               ((y + 0.5) * 2 / source_h - 1)[:, :, None]), dim=-1)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class ResizedCropFlip:
    """RandomResizedCrop to height x width, then horizontal flip, for a whole uint8 batch.
    The draws: resized_crop_boxes's, then the flips (uniform < 0.5)."""
    height: int
    width: int

    def __call__(self, images, generator):
        n, _, source_h, source_w = images.shape
        top, left, h, w = resized_crop_boxes(n, source_h, source_w, generator, images.device)
        flip = torch.rand(n, generator=generator, device=images.device) < 0.5
        return crop_and_resize(images, top, left, h, w, self.height, self.width, flip)


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 images at height x width (bilinear, antialiased): the enlarged training cache seen
    unaugmented, as an objective that scores the training images needs it."""
    if images.shape[-2:] == (height, width):
        return images
    out = F.interpolate(images.float(), (height, width), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- RandAugment

def _bins(low: float, high: float):
    return lambda bins, height, width: torch.linspace(low, high, bins)


# torchvision.transforms.v2.RandAugment's operations, in its order: name -> (magnitudes, signed)
RANDAUGMENT_OPS = {
    "Identity": (None, False),
    "ShearX": (_bins(0.0, 0.3), True),
    "ShearY": (_bins(0.0, 0.3), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
    "Rotate": (_bins(0.0, 30.0), True),
    "Brightness": (_bins(0.0, 0.9), True),
    "Color": (_bins(0.0, 0.9), True),
    "Contrast": (_bins(0.0, 0.9), True),
    "Sharpness": (_bins(0.0, 0.9), True),
    "Posterize": (lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int(), False),
    "Solarize": (_bins(1.0, 0.0), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}


def op_magnitude(op: str, magnitude: int, height: int, width: int, negative: bool = False) -> float:
    """The value operation `op` uses at magnitude bin `magnitude`, negated when it is signed and
    `negative` (0.0 for the operations without a magnitude)."""
    magnitudes, signed = RANDAUGMENT_OPS[op]
    if magnitudes is None:
        return 0.0
    value = float(magnitudes(MAGNITUDE_BINS, height, width)[magnitude])
    return -value if signed and negative else value


def apply_op(images: torch.Tensor, op: str, value: float) -> torch.Tensor:
    """One RandAugment operation with its value on a uint8 (sub-)batch: torchvision.transforms.v2's
    kernels with RandAugment's arguments (nearest interpolation, fill 0), which take batches."""
    if op == "Identity":
        return images
    if op == "ShearX":
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(value)), 0.0],
                         interpolation=TF.InterpolationMode.NEAREST, fill=None, center=[0, 0])
    if op == "ShearY":
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(value))],
                         interpolation=TF.InterpolationMode.NEAREST, fill=None, center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        shift = [int(value), 0] if op == "TranslateX" else [0, int(value)]
        return TF.affine(images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0],
                         interpolation=TF.InterpolationMode.NEAREST, fill=None)
    if op == "Rotate":
        return TF.rotate(images, angle=value, interpolation=TF.InterpolationMode.NEAREST, fill=None)
    if op == "Brightness":
        return TF.adjust_brightness(images, brightness_factor=1.0 + value)
    if op == "Color":
        return TF.adjust_saturation(images, saturation_factor=1.0 + value)
    if op == "Contrast":
        return TF.adjust_contrast(images, contrast_factor=1.0 + value)
    if op == "Sharpness":
        return sharpness(images, 1.0 + value)
    if op == "Posterize":
        return TF.posterize(images, bits=int(value))
    if op == "Solarize":
        return TF.solarize(images, threshold=255.0 * value)
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    raise ValueError(f"unknown RandAugment operation {op!r}")


def sharpness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision.transforms.v2.functional.adjust_sharpness of a uint8 batch, the same numbers:
    the blurred image (3 x 3 kernel, 1s around a 5, over 13) inside a one-pixel border, rounded,
    blended with the image by `factor`. torchvision blurs with a float conv2d; here the kernel sum
    is taken in whole numbers (nine shifted adds and four times the centre), which rounds the same,
    since sum / 13 is never within 1/26 of a half, and is several times faster on CPU."""
    height, width = images.shape[-2:]
    if height <= 2 or width <= 2:
        return images
    wide = images.to(torch.int16)
    total = 4 * wide[..., 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            total += wide[..., dy:height - 2 + dy, dx:width - 2 + dx]
    blurred = torch.round(total.float() / 13.0)
    output = images.to(torch.float32)
    view = output[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view), alpha=1.0 - factor)
    return output.clamp_(0, 255).to(torch.uint8)


@dataclass
class RandAugment:
    """RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
    search space", 2020) as torchvision.transforms.v2.RandAugment(num_ops, magnitude) does it to
    each image, for a whole uint8 batch.

    The draws, in this order: the operation of every (slot, image), uniform over the 14 (num_ops x
    n), then the signs (uniform <= 0.5 negates a signed operation, as torchvision). Then slot after
    slot, each (operation, sign) group of images is one sub-batch through the operation. Grouping
    reads the (num_ops x n) table of choices to the host once a batch: the one host read of the
    augmentation (on CUDA it waits for the batch before; the choices are a few hundred bytes)."""
    num_ops: int = 2
    magnitude: int = 9

    def __call__(self, images, generator):
        n, _, height, width = images.shape
        ops = torch.randint(0, len(RANDAUGMENT_OPS), (self.num_ops, n), generator=generator, device=images.device)
        negative = torch.rand(self.num_ops, n, generator=generator, device=images.device) <= 0.5
        if self.num_ops == 0 or n == 0:
            return images
        keys = (ops * 2 + negative).cpu()  # the one host read
        names = list(RANDAUGMENT_OPS)
        out = images.clone(memory_format=torch.contiguous_format)
        for slot in keys:
            order = torch.argsort(slot, stable=True)
            counts = torch.bincount(slot, minlength=2 * len(names)).tolist()
            for key, group in zip(range(len(counts)), order.split(counts)):
                op = names[key // 2]
                if not len(group) or op == "Identity":
                    continue
                value = op_magnitude(op, self.magnitude, height, width, negative=bool(key % 2))
                index = group.to(images.device)
                out.index_copy_(0, index, apply_op(out.index_select(0, index), op, value))
        return out


# ---------------------------------------------------------------- mixup and cutmix

def beta(alpha: float, generator, device) -> torch.Tensor:
    """One Beta(alpha, alpha) draw as a 0-d float32 tensor on the device (from a Dirichlet of two
    equal concentrations, which takes the generator)."""
    concentration = torch.full((2,), float(alpha), dtype=torch.float32, device=device)
    return torch._sample_dirichlet(concentration, generator=generator)[0].clamp(0.0, 1.0)


@dataclass
class Mixing:
    """Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) and cutmix (Yun
    et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
    ICCV 2019) of a finished batch, as timm's Mixup does them in its default "batch" mode.

    Image i is mixed with image n-1-i (the batch reversed, as timm); one lambda ~ Beta(alpha,
    alpha) for the batch. With probability `prob` the batch is mixed; when both alphas are set,
    cutmix for half the mixed batches (uniform < 0.5) and mixup for the others. Cutmix pastes a box
    of the partner of area (1 - lambda) (sides int(H sqrt(1 - lambda)), int(W sqrt(1 - lambda)),
    centred at a uniform pixel, clipped to the image) and lambda becomes the share of the image
    left unpasted. Returns the mixed inputs and MixedTargets(labels, partner's labels, lambda);
    an unmixed batch has lambda = 1 and its inputs unchanged, bit for bit. Nothing is read to the
    host: the choices stay tensors. The draws, in this order: the mix and cutmix-or-mixup uniforms,
    the mixup lambda (when --mixup), the cutmix lambda and its box centre (vertical, horizontal;
    when --cutmix)."""
    mixup: float | None = None
    cutmix: float | None = None
    prob: float = 1.0

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, generator):
        device, (_, _, height, width) = x.device, x.shape
        mix, switch = torch.rand(2, generator=generator, device=device)
        if self.mixup is not None:
            mixup_lam = beta(self.mixup, generator, device)
        if self.cutmix is not None:
            box, cutmix_lam = self.cutmix_box(beta(self.cutmix, generator, device), height, width, generator, device)
        if self.mixup is not None and self.cutmix is not None:
            use_cutmix = switch < CUTMIX_SWITCH_PROB
            keep, lam = torch.where(use_cutmix, 1.0 - box, mixup_lam), torch.where(use_cutmix, cutmix_lam, mixup_lam)
        elif self.mixup is not None:
            keep = lam = mixup_lam
        else:
            keep, lam = 1.0 - box, cutmix_lam
        mixed = mix < self.prob
        keep, lam = torch.where(mixed, keep, 1.0), torch.where(mixed, lam, 1.0)
        layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else torch.contiguous_format
        out = (x * keep + x.flip(0) * (1.0 - keep)).contiguous(memory_format=layout)
        return out, MixedTargets(labels, labels.flip(0), lam)

    @staticmethod
    def cutmix_box(lam, height: int, width: int, generator, device) -> tuple:
        """(the box as a float 0/1 (H, W) mask, lambda corrected to the area outside the box)."""
        cut = torch.sqrt(1.0 - lam)
        cut_h, cut_w = (height * cut).long(), (width * cut).long()
        centre = torch.rand(2, generator=generator, device=device)
        cy, cx = (centre[0] * height).long(), (centre[1] * width).long()
        y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
        x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
        rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
        box = (((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]).float()
        return box, 1.0 - ((y2 - y1) * (x2 - x1)).float() / (height * width)


def batch_mixing(mixup: float | None, cutmix: float | None, prob: float = 1.0):
    """The engine's mixing step for --mixup/--cutmix/--mix-prob, or None when neither is set."""
    if mixup is None and cutmix is None:
        return None
    return Mixing(mixup, cutmix, prob)


def counted_labels(targets) -> torch.Tensor:
    """The labels training accuracy counts: under mixing, the label of the larger share (a at
    lambda = 1/2)."""
    if isinstance(targets, MixedTargets):
        return torch.where(targets.lam >= 0.5, targets.a, targets.b)
    return targets


# ---------------------------------------------------------------- argument types

def magnitude_bin(text: str) -> int:
    """--randaugment-m: a magnitude bin of torchvision's 31, 0 to 30."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < MAGNITUDE_BINS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAGNITUDE_BINS - 1}, got {text}")
    return value
