"""Stratified, seeded train/valid/test split of c_original_dataset/<name>/<class>/* .

The split is written into a temporary folder and renamed into place, so a failed split never
leaves a half-written dataset; the source images are only read.
"""
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import files
from toolkit.cli import UserError
from toolkit.data import SPLITS
from toolkit.images import class_folders, images_in, is_image, warn_skipped, why_unreadable
from toolkit.label_files import LABEL_FILE_EXTENSIONS

SPLIT_COLUMNS = ["path", "class", "split"]  # split.csv's, and `group` after them with --group-column
SPLIT_OUTPUTS = (*SPLITS, "split.csv", "long_tail.csv", ".cache")  # long_tail.csv: toolkit/long_tail.py


def source_classes(source: Path) -> dict:
    """class name -> sorted image paths, for every class folder of a source dataset."""
    if not source.is_dir():
        root = source.parent
        existing = sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
        raise UserError(f"no folder {source}; put your images in {source}/<class>/ "
                        f"(folders there: {', '.join(existing) or 'none'})")
    folders = class_folders(source)
    if not folders:
        loose = [p for p in source.iterdir() if p.is_file() and is_image(p)]
        hint = f" (it holds {len(loose)} loose images)" if loose else ""
        raise UserError(f"{source} has no class folders{hint}; put each class's images in {source}/<class>/")
    classes, skipped = {}, 0
    for folder in folders:
        classes[folder.name], others = images_in(folder)
        skipped += others
    warn_skipped(skipped, source)
    return classes


def readable_only(classes: dict, workers: int = 2) -> tuple:
    """(classes with only the images that decode whole, [(path, why)] of those that do not): a
    broken file is left out of the split here, not found by 1_train.py hours later."""
    paths = [path for class_paths in classes.values() for path in class_paths]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = dict(zip(paths, pool.map(why_unreadable, paths)))
    unreadable = [(path, why) for path, why in reasons.items() if why is not None]
    return {name: [p for p in class_paths if reasons[p] is None] for name, class_paths in classes.items()}, unreadable


def split_counts(n: int, ratios) -> list:
    """Images per split for a class of n: every split with a ratio > 0 gets at least one."""
    used = [r > 0 for r in ratios]
    counts = [max(1, round(n * r)) if (use and i > 0) else 0 for i, (r, use) in enumerate(zip(ratios, used))]
    counts[0] = n - sum(counts)
    return counts


def class_seed(seed: int, class_name: str) -> int:
    """A class's shuffle depends on the seed and its name only, not on the other classes."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{class_name}".encode()).digest()[:8], "little")


def assign(classes: dict, ratios, seed: int) -> tuple:
    """Rows (path, class, split) and the classes left out for having too few images."""
    needed = sum(r > 0 for r in ratios)
    rows, too_small = [], {}
    for name, paths in classes.items():
        if len(paths) < needed:
            too_small[name] = len(paths)
            continue
        order = np.random.default_rng(class_seed(seed, name)).permutation(len(paths))
        bounds = np.cumsum([0] + split_counts(len(paths), ratios))
        for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
            rows += [(paths[i], name, split) for i in order[lo:hi]]
    return rows, too_small


def write_split(rows, source: Path, target: Path, link: bool, overwrite: bool, side_files=None, labelled=None):
    """Copy (or symlink) every assigned image to target/<split>/<class>/, replacing it atomically;
    side_files (file name -> DataFrame, e.g. the long-tail profile) are written beside split.csv.
    `labelled` (a label_files.LabelledImages, source its base folder): each image keeps its path
    below the base in its class folder, split.csv its path as the label file wrote it and its group."""
    existing = [target / name for name in SPLIT_OUTPUTS if (target / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{target} already holds a split; pass --overwrite to replace it")
    with files.folder_written_whole(target, "the split", replaces=existing) as staging:
        for path, name, split in rows:
            destination = staging / split / name / path.relative_to(source if labelled else source / name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if link:
                destination.symlink_to(path.resolve())
            else:
                shutil.copy2(path, destination)
        table = split_table(rows, source, labelled)
        table.to_csv(staging / "split.csv", index=False)
        for name, frame in (side_files or {}).items():
            frame.to_csv(staging / name, index=False)


def split_table(rows, source: Path, labelled=None) -> pd.DataFrame:
    """split.csv: path (below the source, or as the label file wrote it), class, split (, group)."""
    if labelled is None:
        return pd.DataFrame([(str(p.relative_to(source)), n, s) for p, n, s in rows], columns=SPLIT_COLUMNS)
    table = pd.DataFrame([(labelled.written_as[p], n, s) for p, n, s in rows], columns=SPLIT_COLUMNS)
    if labelled.groups is not None:
        table["group"] = [labelled.groups[p] for p, _, _ in rows]
    return table


def refuse_single_class(kept: list, source: Path, from_label_file=False):
    """A split of fewer than two classes is no dataset; a label file in the source folder is most
    likely where the labels are."""
    if len(kept) >= 2:
        return
    if from_label_file:
        raise UserError(f"only {len(kept)} class of the label file has enough images to split ({', '.join(kept)}); "
                        f"each class needs one image per split, a classifier at least two classes")
    label_files = sorted(p for p in source.glob("*") if p.suffix.lower() in LABEL_FILE_EXTENSIONS and p.is_file())
    hint = (f"; {source} holds {label_files[0].name}: if it lists each image's label, split with "
            f"--labels {label_files[0]} (and --path-column, --label-column naming its columns)" if label_files else
            f"; put each class's images in {source}/<class>/, or list them in a CSV and split with --labels FILE")
    raise UserError(f"{source} would split into {len(kept)} class ({', '.join(map(repr, kept)) or 'none'}); "
                    f"a classifier needs at least two{hint}")


def count_table(rows, class_order) -> pd.DataFrame:
    """Images per class and split, classes in folder order."""
    frame = pd.DataFrame([(n, s) for _, n, s in rows], columns=["class", "split"])
    table = pd.crosstab(frame["class"], frame["split"]).reindex(index=class_order, columns=list(SPLITS))
    return table.fillna(0).astype(int)


def imbalance_ratio(counts) -> float:
    counts = [c for c in counts if c > 0]
    return max(counts) / min(counts) if counts else float("nan")
