"""The embedded demo dataset: scikit-learn's handwritten digits, rendered long-tailed.

`load_digits` holds 1797 real 8x8 scans of the digits 0-9 (about 180 each). The demo keeps
LARGEST images of digit 0 down to LARGEST / RATIO of digit 9 on an exponential profile (the
usual long-tailed CIFAR recipe), and renders each as a 32x32 RGB PNG, dark ink on white.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit import files

NAME = "digits-lt"
LARGEST = 170
RATIO = 10
SIZE = 32


def long_tail_counts(num_classes: int = 10, largest: int = LARGEST, ratio: float = RATIO) -> list:
    """n_c = largest * ratio^(-c / (K - 1)): class 0 has `largest`, the last `largest / ratio`."""
    return [round(largest * ratio ** (-c / (num_classes - 1))) for c in range(num_classes)]


def render(image_8x8: np.ndarray) -> Image.Image:
    """One digit (values 0-16, 16 = ink) as a SIZE x SIZE RGB image."""
    gray = Image.fromarray((255 - image_8x8 * 255 / 16).astype(np.uint8), mode="L")
    return gray.resize((SIZE, SIZE), Image.BICUBIC).convert("RGB")


def write_demo(source_root: Path, seed: int = 0) -> Path:
    """Render the demo into source_root/digits-lt/<digit>/, unless it is already there."""
    target = Path(source_root) / NAME
    if target.is_dir():
        print(f"demo images: using {target}")
        return target
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(seed)
    with files.folder_written_whole(target, "the demo dataset") as staging:
        for digit, count in enumerate(long_tail_counts()):
            folder = staging / str(digit)
            folder.mkdir(parents=True)
            chosen = np.sort(rng.permutation(np.flatnonzero(digits.target == digit))[:count])
            for index in chosen:
                render(digits.images[index]).save(folder / f"digit{digit}_{index:04d}.png")
    print(f"demo images: rendered {sum(long_tail_counts())} digits into {target}")
    return target
