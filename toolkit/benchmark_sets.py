"""Benchmarks a user already has on disk in their published formats, read through torchvision.

`0_data_split.py --from-torchvision NAME --root DIR --dataset OUT` opens NAME's train and test sets
with `torchvision.datasets.NAME(DIR, ..., download=False)`, so the files are found and checked
(CIFAR's and SVHN's against their published MD5 checksums) exactly as torchvision does, and writes
them as a_datasets/OUT/{train,valid,test}/<class>/<part>-<index>.png: PNG is lossless, so every
pixel is the published one, and <part>-<index> names the image's place in torchvision's set. The
published test set is the test split, whole; validation is carved from the training set, stratified
(or, with --long-tail, balanced: toolkit/long_tail.py). Nothing is downloaded.
"""
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import files, long_tail, splitting
from toolkit.cli import UserError

# NAME -> the keyword arguments that open its (train, test) parts
PARTS = {
    "CIFAR10": ({"train": True}, {"train": False}),
    "CIFAR100": ({"train": True}, {"train": False}),
    "MNIST": ({"train": True}, {"train": False}),
    "FashionMNIST": ({"train": True}, {"train": False}),
    "KMNIST": ({"train": True}, {"train": False}),
    "SVHN": ({"split": "train"}, {"split": "test"}),
}
UNREADABLE = (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError)


def dataset_class(name: str):
    import torchvision.datasets
    if name not in PARTS:
        raise UserError(f"--from-torchvision {name}: not one this toolkit reads; choose one of {', '.join(PARTS)} "
                        f"(the names of torchvision.datasets' classes)")
    return getattr(torchvision.datasets, name)


def expected_files(cls, root: Path) -> list:
    """(path, published MD5 or None) of each file torchvision reads for the train and test parts,
    from the class's own tables (CIFAR's train_list/test_list/meta, MNIST's resources, SVHN's split_list)."""
    root = Path(root)
    if hasattr(cls, "train_list"):
        folder = root / cls.base_folder
        listed = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return [(folder / name, md5) for name, md5 in listed]
    if hasattr(cls, "resources"):  # MNIST and its kin keep the unpacked files in ROOT/NAME/raw/
        return [(root / cls.__name__ / "raw" / os.path.splitext(os.path.basename(url))[0], None)
                for url, _ in cls.resources]
    return [(root / cls.split_list[part][1], cls.split_list[part][2]) for part in ("train", "test")]


def diagnose(cls, root: Path, error: Exception) -> UserError:
    """One line: the files missing or failing their checksum, and where torchvision expects them."""
    from torchvision.datasets.utils import check_integrity
    expected = expected_files(cls, root)
    folder = expected[0][0].parent
    missing = [p.name for p, _ in expected if not p.is_file()]
    if missing:
        return UserError(f"--from-torchvision {cls.__name__} --root {root}: missing {', '.join(missing)} in {folder}/ "
                         f"(where torchvision.datasets.{cls.__name__}(root='{root}') expects them); put the published "
                         f"files there, unpacked, or point --root at the folder above them")
    corrupt = [p.name for p, md5 in expected if md5 and not check_integrity(str(p), md5)]
    if corrupt:
        verb = "does" if len(corrupt) == 1 else "do"
        return UserError(f"--from-torchvision {cls.__name__}: {', '.join(corrupt)} in {folder}/ {verb} not match the "
                         f"published MD5 checksum (a partial or altered download); download again")
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"--from-torchvision {cls.__name__}: torchvision cannot read the files in {folder}/ ({reason}); "
                     f"is one truncated? download it again")


def open_parts(name: str, root: Path) -> tuple:
    """NAME's (train, test) torchvision datasets, read from root, never downloaded."""
    cls = dataset_class(name)
    if not Path(root).is_dir():
        raise UserError(f"--root {root} is not a folder; give the folder you passed torchvision as root=")
    try:
        return tuple(cls(str(root), download=False, **kwargs) for kwargs in PARTS[name])
    except UNREADABLE as e:
        raise diagnose(cls, Path(root), e) from None


def labels_of(part) -> np.ndarray:
    labels = part.targets if hasattr(part, "targets") else part.labels
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def folder_names(part, labels) -> list:
    """A folder name for each label 0 ... L-1, in label order: torchvision's class name (a '/' made
    '-'), prefixed with the label ("3-Dress") where the names would not sort in label order, so the
    toolkit's class order (folder order) is the label order. SVHN has no names: its digits."""
    count = int(labels.max()) + 1
    names = [str(n).replace("/", "-") for n in getattr(part, "classes", None) or range(count)]
    if names != sorted(names) or len(set(names)) < len(names):
        width = len(str(len(names) - 1))
        names = [f"{label:0{width}d}-{n}" for label, n in enumerate(names)]
    return names


def assign(parts, valid_share: float, imbalance, n_max, order_file, seed: int) -> tuple:
    """Rows ((part, index), class, split) and, with --long-tail R, the profile table and where its
    class order came from (else None, None). Classes without training images are left out."""
    train_labels, test_labels = labels_of(parts[0]), labels_of(parts[1])
    names = folder_names(parts[0], np.concatenate([train_labels, test_labels]))
    classes = {names[label]: [("train", int(i)) for i in np.flatnonzero(train_labels == label)]
               for label in range(len(names)) if (train_labels == label).any()}
    if imbalance is None:
        rows, _ = splitting.assign(classes, (1 - valid_share, valid_share, 0.0), seed)
    else:
        order = long_tail.read_class_order(order_file, list(classes)) if order_file else list(classes)
        smallest = min(map(len, classes.values()))
        held_out = long_tail.held_out_sizes(smallest, (1 - valid_share, valid_share, 0.0))
        rows, counts = long_tail.assign({name: classes[name] for name in order}, held_out, imbalance, n_max, seed)
    kept = {name for _, name, _ in rows}
    rows += [(("test", int(i)), names[label], "test") for i, label in enumerate(test_labels) if names[label] in kept]
    if imbalance is None:
        return rows, None, None
    return (rows, long_tail.profile_table(rows, counts, imbalance),
            f"order of {order_file}" if order_file else "folder order, torchvision's label order")


def file_name(item) -> str:
    part, index = item
    return f"{part}-{index:05d}.png"


def write_split(rows, parts, target: Path, overwrite: bool, side_files=None):
    """Every row's image as PNG in target/<split>/<class>/, with split.csv (path relative to the
    class folders' parent, as splitting.write_split writes it) and the side files; all or nothing."""
    existing = [target / name for name in splitting.SPLIT_OUTPUTS if (target / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{target} already holds a split; pass --overwrite to replace it")
    by_part = dict(zip(("train", "test"), parts))
    with files.folder_written_whole(target, "the split", replaces=existing) as staging:
        for item, name, split in rows:
            destination = staging / split / name / file_name(item)
            destination.parent.mkdir(parents=True, exist_ok=True)
            image, _ = by_part[item[0]][item[1]]
            image.save(destination, format="PNG")
        table = pd.DataFrame([(f"{name}/{file_name(item)}", name, split) for item, name, split in rows],
                             columns=["path", "class", "split"])
        table.to_csv(staging / "split.csv", index=False)
        for name, frame in (side_files or {}).items():
            frame.to_csv(staging / name, index=False)
