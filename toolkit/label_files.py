"""Labels in a file (`0_data_split.py --labels FILE`): a CSV or TSV of image paths and labels, the
way most real sets ship (one `images/` folder and a table beside it), read and checked whole
before anything is written, and split by group when images must not straddle the splits.

Every mistake in the file is one UserError that names what is wrong and where; the split then
goes through toolkit/splitting.py as a class-folder split does.
"""
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from toolkit.cli import UserError, counted
from toolkit.data import SPLITS

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
LABEL_FILE_EXTENSIONS = (".csv", ".tsv")  # what a source folder's single-class refusal looks for


@dataclass
class LabelledImages:
    """A label file, checked: class name -> sorted absolute image paths (classes sorted by name, as
    class folders are), each image's group (None without --group-column), the folder the images
    are placed relative to in the split, and each path as the file wrote it (for split.csv)."""
    classes: dict
    groups: dict | None
    base: Path
    written_as: dict


def separator(path: Path) -> str:
    """By extension (.csv, .tsv), else sniffed from the first lines."""
    if path.suffix.lower() in SEPARATORS:
        return SEPARATORS[path.suffix.lower()]
    sample = path.read_text(errors="replace")[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        raise UserError(f"cannot tell the columns of {path} apart; name it .csv (commas) or .tsv (tabs)") from None


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"no label file {path}; give --labels the CSV or TSV file that lists each image's path "
                        f"and label")
    try:
        return pd.read_csv(path, sep=separator(path), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} as a table ({str(e).strip().splitlines()[0]}); it needs a header line "
                        f"and one row per image") from None


def check_columns(table: pd.DataFrame, path: Path, wanted: dict):
    """wanted: option -> column name; a missing one names the columns the file has."""
    missing = [f"{option} {name!r}" for option, name in wanted.items() if name is not None and name not in table]
    if missing:
        raise UserError(f"{path} has no column {', no column '.join(missing)}; its columns: "
                        f"{', '.join(repr(c) for c in table.columns)} (name yours with --path-column, "
                        f"--label-column, --group-column)")


def why_not_a_folder_name(label: str) -> str | None:
    """Why `label` cannot be a class folder's name, or None when it can."""
    if not label.strip():
        return "is empty"
    if label in (".", "..") or label.startswith("."):
        return "starts with '.' (a hidden folder)"
    bad = [c for c in ("/", "\\", "\0", ":", "*", "?", '"', "<", ">", "|") if c in label]
    if bad:
        return f"holds {', '.join(repr(c) for c in bad)}"
    if label != label.strip():
        return "starts or ends with a space"
    return None


def check_labels(table: pd.DataFrame, path: Path, column: str):
    for row, label in enumerate(table[column], start=2):  # line 1 is the header
        why = why_not_a_folder_name(label)
        if why:
            raise UserError(f"{path} line {row}: label {label!r} {why}, so it cannot name a class folder; "
                            f"fix the label")


def resolved(table: pd.DataFrame, path: Path, column: str) -> list:
    """Absolute paths of the listed images (relative ones from the label file's folder); all must exist."""
    folder = path.parent
    paths = [Path(os.path.normpath(folder / p)) for p in table[column]]
    empty = [row for row, p in enumerate(table[column], start=2) if not p.strip()]
    if empty:
        raise UserError(f"{path} line {empty[0]}: the {column!r} column is empty ({counted(len(empty), 'row')} "
                        f"without a path); give every row its image")
    missing = [written for written, p in zip(table[column], paths) if not p.is_file()]
    if missing:
        raise UserError(f"{counted(len(missing), 'listed path')} of {path} do not exist, e.g. "
                        f"{', '.join(missing[:3])} (relative paths are read from {folder})")
    return paths


def check_one_label_each(paths: list, labels: list, path: Path):
    seen = {}
    for image, label in zip(paths, labels):
        first = seen.setdefault(image, label)
        if first != label:
            raise UserError(f"{path} gives {image} two labels, {first!r} and {label!r}; keep one row for it")


def read_labels(path: Path, path_column="path", label_column="label", group_column=None) -> LabelledImages:
    """The label file read and checked whole: see LabelledImages. A row repeated exactly is kept once."""
    path = Path(path)
    table = read_table(path)
    check_columns(table, path, {"--path-column": path_column, "--label-column": label_column,
                                "--group-column": group_column})
    if not len(table):
        raise UserError(f"{path} lists no images; it needs one row per image under its header")
    check_labels(table, path, label_column)
    paths = resolved(table, path, path_column)
    labels = list(table[label_column])
    check_one_label_each(paths, labels, path)
    groups = list(table[group_column]) if group_column else None
    if groups is not None and any(not g.strip() for g in groups):
        row = next(r for r, g in enumerate(groups, start=2) if not g.strip())
        raise UserError(f"{path} line {row}: the group column {group_column!r} is empty; give every image its group")
    names = sorted(set(labels))
    if len(names) < 2:
        raise UserError(f"{path} has {counted(len(names), 'class', 'classes')} ({', '.join(map(repr, names))}) in "
                        f"--label-column {label_column!r}; a classifier needs at least two")
    classes = {name: sorted({p for p, label in zip(paths, labels) if label == name}) for name in names}
    written = dict(zip(paths, table[path_column]))
    group_of = dict(zip(paths, groups)) if groups is not None else None
    base = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return LabelledImages(classes, group_of, base, written)


# ---------------------------------------------------------------- the split by group

def group_folds(n_groups: int, share: float) -> int:
    """StratifiedGroupKFold's n_splits for holding out about `share` of the groups: one fold of
    round(1 / share), at least 2, at most the number of groups."""
    return int(min(max(2, round(1 / share)), n_groups))


def held_out_fold(labels, groups, share: float, seed: int) -> np.ndarray:
    """Indices of one fold of a StratifiedGroupKFold that holds out about `share` of the images,
    whole groups, class proportions kept as far as the groups allow."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise UserError(f"the split by group needs at least 2 groups per split to hold out; these images have "
                        f"{counted(n_groups, 'group')}")
    folds = StratifiedGroupKFold(n_splits=group_folds(n_groups, share), shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    return held


def assign_groups(classes: dict, group_of: dict, ratios, seed: int) -> list:
    """Rows (path, class, split) with every group in one split: test first (about TEST of the
    images), then valid from the rest (about VALID / (TRAIN + VALID) of it), each one fold of
    scikit-learn's StratifiedGroupKFold seeded by `seed`."""
    items = [(p, name) for name, paths in classes.items() for p in paths]
    paths = np.array([p for p, _ in items], dtype=object)
    labels = np.array([name for _, name in items])
    groups = np.array([group_of[p] for p in paths])
    split_of = np.full(len(items), "train", dtype=object)
    remaining = np.arange(len(items))
    train_ratio, valid_ratio, test_ratio = ratios
    for split, share in (("test", test_ratio), ("valid", valid_ratio / (train_ratio + valid_ratio))):
        if share <= 0:
            continue
        held = remaining[held_out_fold(labels[remaining], groups[remaining], share, seed)]
        split_of[held] = split
        remaining = np.setdiff1d(remaining, held)
    rows = [(paths[i], str(labels[i]), str(split_of[i])) for i in range(len(items))]
    untrained = [name for name in classes if not (split_of[labels == name] == "train").any()]
    if untrained:
        raise UserError(f"the split by group left class(es) {', '.join(map(repr, untrained))} without a training "
                        f"image (their groups all went to valid or test); these classes need more groups")
    return rows


def describe_groups(rows, group_of: dict, column: str) -> str:
    """The groups per split, as a line below the images table."""
    frame = pd.DataFrame([(group_of[p], s) for p, _, s in rows], columns=["group", "split"])
    per_split = frame.groupby("split")["group"].nunique().reindex(list(SPLITS)).fillna(0).astype(int)
    leaked = leaked_groups(rows, group_of)
    return (f"groups ({column}) per split: " + ", ".join(f"{s} {n}" for s, n in per_split.items())
            + f"; {counted(len(leaked), 'group')} in more than one split")


def leaked_groups(rows, group_of: dict) -> list:
    """Groups found in more than one split (none, after assign_groups)."""
    splits = {}
    for path, _, split in rows:
        splits.setdefault(group_of[path], set()).add(split)
    return sorted(g for g, held in splits.items() if len(held) > 1)
