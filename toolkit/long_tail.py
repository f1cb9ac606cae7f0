"""The long-tailed benchmark protocol (CIFAR-LT): an exponential profile on the training split only.

Cao et al. (LDAM-DRW, NeurIPS 2019) and Cui et al. (class-balanced loss, CVPR 2019) keep, of the
c-th class in a stated order (c = 0 ... C-1), n_c = n_max * R^(-c / (C - 1)) training images: the
first class n_max, the last n_max / R. kaidic/LDAM-DRW's imbalance_cifar.py:17-23
(`get_img_num_per_cls`, imb_type 'exp') computes it as `int(img_max * imb_factor**(cls_idx /
(cls_num - 1.0)))` with imb_factor = 1/R: rounded down by int(), which `profile` matches (CIFAR-10-LT
at R = 100: 5000, 2997, ..., 83, 50; 12406 images). Validation and test stay balanced: every class
keeps the same number of held-out images, chosen before the training images are drawn, so a score
on them weighs every class alike and is not the training profile's. The reference validated on
CIFAR's test set; here validation is its own split.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.cli import UserError
from toolkit.splitting import class_seed, split_counts

PROFILE_FILE = "long_tail.csv"  # beside split.csv: the profile, one row per class in profile order


def profile(num_classes: int, n_max: int, imbalance: float) -> list:
    """Training images per class, in profile order: int(n_max * (1/R)^(c / (C - 1))), as
    imbalance_cifar.py:22-23 writes it (imb_factor = 1/R, the exponent's divisor a float)."""
    imb_factor = 1.0 / imbalance
    return [int(n_max * imb_factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def largest_n_max(pools: list, imbalance: float) -> int:
    """The largest n_max whose profile fits every class's pool (pools in profile order); each
    count int(n_max * f) grows with n_max, so a bisection over 1 ... pools[0] finds it."""
    def fits(n_max):
        return all(need <= have for need, have in zip(profile(len(pools), n_max, imbalance), pools))
    low, high = 0, pools[0]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def read_class_order(path: Path, classes) -> list:
    """The class names of FILE, one a line (blank lines skipped), the first to get n_max: every
    class exactly once."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --class-order {path} ({getattr(e, 'strerror', None) or e}); give a text "
                        f"file with one class name a line") from None
    unknown = [n for n in names if n not in classes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [c for c in classes if c not in names]
    if unknown or repeated or missing:
        problems = [f"{what}: {', '.join(found)}" for what, found in
                    (("not a class", unknown), ("listed twice", repeated), ("missing", missing)) if found]
        raise UserError(f"--class-order {path} must list every class once ({'; '.join(problems)}); "
                        f"the classes: {', '.join(classes)}")
    return names


def training_counts(pools: dict, imbalance: float, n_max=None) -> dict:
    """class -> training images, for pools (class -> images left after the held-out ones) in
    profile order; n_max given or the largest the pools allow."""
    names, sizes = list(pools), [len(p) for p in pools.values()]
    if len(names) < 2:
        raise UserError(f"--long-tail needs at least 2 classes, found {len(names)}")
    best = largest_n_max(sizes, imbalance)
    if profile(len(names), best, imbalance)[-1] < 1:
        raise UserError(f"--long-tail {imbalance:g}: beside their held-out images the classes allow n_max {best} at "
                        f"most, which leaves the last class '{names[-1]}' no training image (that needs n_max >= "
                        f"{imbalance:g}); lower --long-tail, or give the classes more images")
    n_max = best if n_max is None else n_max
    counts = profile(len(names), n_max, imbalance)
    short = [(name, need, have) for name, need, have in zip(names, counts, sizes) if need > have]
    if short:
        name, need, have = short[0]
        raise UserError(f"--long-tail {imbalance:g} --n-max {n_max}: class '{name}' (rank {names.index(name)}) needs "
                        f"{need} training images and has {have} beside its held-out ones; use --n-max {best} or less")
    if counts[-1] < 1:
        raise UserError(f"--long-tail {imbalance:g} --n-max {n_max} leaves the last class '{names[-1]}' no training "
                        f"image (int({n_max} / {imbalance:g}) = 0); raise --n-max to at least {imbalance:g} "
                        f"(at most {best} fits)")
    return dict(zip(names, counts))


def assign(classes: dict, held_out: dict, imbalance: float, n_max, seed: int) -> tuple:
    """Rows (item, class, split) of a long-tailed split: in each class (shuffled by the seed and its
    name), the first held_out[split] items go to each held-out split (the same in every class),
    then the profile's count to train; the rest are left out. `classes` in profile order.
    Returns (rows, the profile: class -> training count)."""
    needed = sum(held_out.values())
    orders = {name: np.random.default_rng(class_seed(seed, name)).permutation(len(items))
              for name, items in classes.items()}
    counts = training_counts({name: orders[name][needed:] for name in classes}, imbalance, n_max)
    rows = []
    for name, items in classes.items():
        bounds = np.cumsum([0, *held_out.values(), counts[name]])
        for split, lo, hi in zip([*held_out, "train"], bounds[:-1], bounds[1:]):
            rows += [(items[i], name, split) for i in orders[name][lo:hi]]
    return rows, counts


def held_out_sizes(smallest: int, ratios) -> dict:
    """Valid and test images per class (the splits with a share > 0): --ratio's shares of the
    smallest class, at least one each (as splitting.split_counts gives them), the same in every class."""
    _, valid, test = split_counts(smallest, ratios)
    return {split: count for split, count in (("valid", valid), ("test", test)) if count}


def profile_table(rows, counts: dict, imbalance: float) -> pd.DataFrame:
    """The written profile, one row per class in profile order: rank, class, its images in train,
    valid and test (counted from the rows), and the imbalance and n_max the profile came from."""
    split_of = pd.crosstab(pd.Series([name for _, name, _ in rows]), pd.Series([split for _, _, split in rows]))
    split_of = split_of.reindex(index=list(counts), columns=["train", "valid", "test"]).fillna(0).astype(int)
    n_max = next(iter(counts.values()))
    return pd.DataFrame({"rank": range(len(counts)), "class": list(counts), **{s: split_of[s].to_numpy() for s in
                         split_of}, "imbalance": imbalance, "n_max": n_max})


def split_folder(classes: dict, ratios, imbalance: float, n_max, order_file, seed: int) -> tuple:
    """A source folder's long-tailed split: (rows, profile table, where the class order came from).
    Valid and test: --ratio's shares of the smallest class, in every class."""
    order = read_class_order(order_file, list(classes)) if order_file else list(classes)
    held_out = held_out_sizes(min(len(paths) for paths in classes.values()), ratios)
    rows, counts = assign({name: classes[name] for name in order}, held_out, imbalance, n_max, seed)
    return rows, profile_table(rows, counts, imbalance), (f"order of {order_file}" if order_file else "folder order")


def describe(table: pd.DataFrame, order_source: str) -> str:
    imbalance, n_max, classes = table["imbalance"].iloc[0], table["n_max"].iloc[0], len(table)
    return (f"long tail: n_c = int({n_max} * {imbalance:g}^(-c / {classes - 1})) training images for the class of "
            f"rank c ({order_source}); the profile is in {PROFILE_FILE}\n"
            + table[["rank", "class", "train", "valid", "test"]].to_string(index=False))
