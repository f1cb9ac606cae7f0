"""Batch augmentations on the device: whole uint8 batches, per-image random parameters drawn
from a seeded generator, so an epoch's augmentation repeats exactly after a resume."""
import torch
import torch.nn.functional as F

CROP_PADDING = 4


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
