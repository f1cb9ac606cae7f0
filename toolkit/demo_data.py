"""The embedded demo dataset: scikit-learn's handwritten digits, rendered long-tailed.

`load_digits` holds 1797 real 8x8 scans of the digits 0-9 (about 180 each). The demo keeps
LARGEST images of digit 0 down to LARGEST / RATIO of digit 9 on an exponential profile (the
usual long-tailed CIFAR recipe), and renders each as a 32x32 RGB PNG, dark ink on white.
`write_all` renders every scan instead (BALANCED_NAME), the balanced source that
`0_data_split.py --demo --long-tail R` cuts to the CIFAR-LT protocol. `write_labelled` renders
digits-lt as real sets ship (LABELLED_NAME: one images/ folder, labels.csv, three views a scan).
"""
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit import files

NAME = "digits-lt"
BALANCED_NAME = "digits"  # every scan, for --long-tail
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
    rng, counts = np.random.default_rng(seed), long_tail_counts()
    return _write(Path(source_root) / NAME, lambda digit, indices: np.sort(rng.permutation(indices)[:counts[digit]]))


def write_all(source_root: Path) -> Path:
    """Render every scan, balanced, into source_root/digits/<digit>/, unless it is already there."""
    return _write(Path(source_root) / BALANCED_NAME, lambda digit, indices: indices)


def _write(target: Path, choose) -> Path:
    """Render the scans choose(digit, its scans' indices) keeps into target/<digit>/, file names
    digit<d>_<index in load_digits>.png."""
    if target.is_dir():
        print(f"demo images: using {target}")
        return target
    from sklearn.datasets import load_digits
    digits = load_digits()
    written = 0
    with files.folder_written_whole(target, "the demo dataset") as staging:
        for digit in range(10):
            folder = staging / str(digit)
            folder.mkdir(parents=True)
            for index in choose(digit, np.flatnonzero(digits.target == digit)):
                render(digits.images[index]).save(folder / f"digit{digit}_{index:04d}.png")
                written += 1
    print(f"demo images: rendered {written} digits into {target}")
    return target


LABELLED_NAME = "digits-labels"
LABEL_FILE = "labels.csv"
RENDERINGS = ((-10, (0, 0)), (0, (1, -1)), (10, (-1, 1)))  # (degrees, (dx, dy) pixels): one scan, three views
GROUP_COLUMN = "scan"


def labelled_file(source_root: Path) -> Path:
    return Path(source_root) / LABELLED_NAME / LABEL_FILE


def write_labelled(source_root: Path, seed: int = 0) -> Path:
    """The demo as real sets ship: every image in source_root/digits-labels/images/, the labels in
    labels.csv beside it (path, label, scan). Each scan of digits-lt is rendered three times
    (turned and shifted a little), and the `scan` column ties the three together: a split by image
    puts views of one scan in training and test (a leak that flatters the test numbers), a split
    by --group-column scan does not. Returns the label file's path."""
    target = labelled_file(source_root).parent
    if target.is_dir():
        print(f"demo images: using {target}")
        return target / LABEL_FILE
    from sklearn.datasets import load_digits
    digits, rng, counts = load_digits(), np.random.default_rng(seed), long_tail_counts()
    rows = []
    with files.folder_written_whole(target, "the labelled demo dataset") as staging:
        (staging / "images").mkdir()
        for digit in range(10):
            for index in np.sort(rng.permutation(np.flatnonzero(digits.target == digit))[:counts[digit]]):
                for view, (angle, shift) in enumerate(RENDERINGS):
                    name = f"images/scan{index:04d}_{view}.png"
                    image = render(digits.images[index]).rotate(angle, resample=Image.BICUBIC, translate=shift,
                                                                fillcolor=(255, 255, 255))
                    image.save(staging / name)
                    rows.append({"path": name, "label": str(digit), GROUP_COLUMN: f"scan{index:04d}"})
        files.write_csv(staging / LABEL_FILE, rows)
    print(f"demo images: rendered {len(rows)} views of {len(rows) // len(RENDERINGS)} digits into {target}/images, "
          f"labels in {LABEL_FILE}")
    return target / LABEL_FILE
