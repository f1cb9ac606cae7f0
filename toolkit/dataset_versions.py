"""A new dataset version: NAME's splits copied, plus the rows a person labelled (and, if given,
the model's pseudo-labels) copied into train/<label>/, with split.csv saying where each image came
from. Every row is checked before anything is written; the version is built in a staging folder
and renamed into place, and NAME is only read. 6_active.py --ingest.
"""
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from toolkit import files
from toolkit.cli import UserError, counted, progress_bar
from toolkit.data import SPLITS, dataset_dir, dataset_hashes, scan_split
from toolkit.images import IMAGE_EXTENSIONS, content_hash, decode_image, is_image

SPLIT_COLUMNS = ["path", "class", "split", "source", "origin"]
SOURCES = ("original", "labelled", "pseudo")


def read_label_table(csv_path: Path, class_names: list, dataset: str, option: str) -> list:
    """The (absolute path, label) rows of a labels file with a non-empty `label`. A label that is
    not a class of the dataset, a missing or unreadable file, or one file with two labels is a
    UserError naming the rows. Relative paths are taken from the current directory."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"{option} {csv_path}: no such file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{option} {csv_path} is not a readable CSV file ({e})") from None
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise UserError(f"{option} {csv_path} has no {' and no '.join(missing)} column (columns: "
                        f"{', '.join(table.columns) or 'none'}); it needs path and label, as queries.csv has")
    rows, bad_labels, two_labels, bad_files, chosen = [], [], [], [], {}
    for line, (path_text, label) in enumerate(zip(table["path"], table["label"]), start=2):
        label, path_text = label.strip(), path_text.strip()
        if not label:
            continue
        path = Path(path_text).expanduser().resolve()
        if label not in class_names:
            bad_labels.append(f"line {line}: {label!r}")
        elif not path_text or not path.is_file():
            bad_files.append(f"line {line}: {path_text or '(empty path)'} does not exist")
        elif not is_image(path):
            bad_files.append(f"line {line}: {path} is not an image (images end in {', '.join(IMAGE_EXTENSIONS)})")
        elif chosen.get(path, label) != label:
            two_labels.append(f"line {line}: {path.name} labelled both {chosen[path]!r} and {label!r}")
        elif path not in chosen:
            chosen[path] = label
            rows.append((path, label))
    if bad_labels:
        raise UserError(f"{option} {csv_path}: {counted(len(bad_labels), 'label')} not among the classes of {dataset} "
                        f"({summarised(bad_labels)}); its classes are {', '.join(class_names)}")
    if two_labels:
        raise UserError(f"{option} {csv_path}: {counted(len(two_labels), 'file')} given two different labels "
                        f"({summarised(two_labels)}); keep one label per file")
    if bad_files:
        raise UserError(f"{option} {csv_path}: {counted(len(bad_files), 'file')} missing or not an image "
                        f"({summarised(bad_files)})")
    for path, _ in rows:
        try:
            decode_image(path, 1, 1)
        except UserError as e:
            raise UserError(f"{option} {csv_path}: {e}") from None
    return rows


def summarised(items: list, shown: int = 3) -> str:
    return "; ".join(items[:shown]) + (f"; and {len(items) - shown} more" if len(items) > shown else "")


def check_version_name(data_root: Path, name: str, new: str, overwrite: bool) -> Path:
    """The folder of the new version, refusing NAME itself, a path, or (without overwrite) an existing one."""
    if not new or new != Path(new).name or new.startswith("."):
        raise UserError(f"--into {new!r}: give a plain folder name for the new dataset, e.g. {name}-r1")
    if new == name:
        raise UserError(f"--into {new} is the dataset itself; {name} is never modified, name a new version "
                        f"(e.g. {name}-r1)")
    target = Path(data_root) / new
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists; pass --overwrite to replace it, or name another --into")
    return target


def free_name(folder: Path, name: str, taken: set) -> str:
    """`name`, or name-1, name-2, ... if a file of that name is already in `folder`."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 0
    while (folder / candidate) in taken:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    taken.add(folder / candidate)
    return candidate


@dataclass
class Version:
    """What build_version wrote: split.csv's rows and the rows left out."""
    target: Path
    rows: list
    pseudo_dropped: int = 0  # pseudo rows also labelled by the person: the person's label wins
    already_in: list = field(default_factory=list)  # labelled or pseudo files whose content NAME holds

    def counts(self) -> dict:
        return {kind: sum(row[3] == kind for row in self.rows) for kind in SOURCES}


def ingest(labels_csv: Path, data_root: Path, name: str, new: str, *, pseudo_csv: Path = None, overwrite=False,
           workers: int = 2, progress=True) -> Version:
    """Check the labels file (and the pseudo-labels file) against NAME's classes, then build NEW;
    a mistake is a UserError before anything is written."""
    source = dataset_dir(data_root, name)
    check_version_name(data_root, name, new, overwrite)
    class_names = scan_split(source, "train").class_names
    labelled = read_label_table(labels_csv, class_names, name, "--ingest")
    pseudo = read_label_table(pseudo_csv, class_names, name, "--pseudo") if pseudo_csv else []
    if not labelled and not pseudo:
        raise UserError(f"--ingest {labels_csv} has no row with a label; fill in its label column first")
    return build_version(data_root, name, new, labelled, pseudo, overwrite=overwrite, workers=workers,
                         progress=progress)


def build_version(data_root: Path, name: str, new: str, labelled: list, pseudo: list = (), *, overwrite=False,
                  workers: int = 2, progress=True) -> Version:
    """a_datasets/NEW: NAME's splits copied, plus the labelled and pseudo-labelled (path, label)
    rows copied into train/<label>/; split.csv with a `source` (original, labelled, pseudo) and an
    `origin` (the file it was copied from) column. Built in a staging folder and renamed into
    place; NAME is only read."""
    source = Path(data_root) / name
    target = check_version_name(data_root, name, new, overwrite)
    splits = [s for s in SPLITS if (source / s).is_dir()]
    scanned = {s: scan_split(source, s) for s in splits}
    known = dataset_hashes(source, workers, progress)
    labelled_paths = {path for path, _ in labelled}
    kept_pseudo = [(path, label) for path, label in pseudo if path not in labelled_paths]
    additions, already_in = [], []
    for (path, label), kind in [(row, "labelled") for row in labelled] + [(row, "pseudo") for row in kept_pseudo]:
        if content_hash(path) in known:
            already_in.append(path)
        else:
            additions.append((path, label, kind))

    rows = [(str(p.relative_to(scanned[s].root)), scanned[s].class_names[c], s, "original", "")
            for s in splits for p, c in zip(scanned[s].paths, scanned[s].labels.tolist())]
    with files.folder_written_whole(target, "the new dataset version") as staging:
        for s in splits:
            shutil.copytree(source / s, staging / s)
        taken = {staging / "train" / r[0] for r in rows if r[2] == "train"}
        for path, label, kind in progress_bar(additions, progress, desc="copy", unit="img"):
            folder = staging / "train" / label
            folder.mkdir(parents=True, exist_ok=True)
            file_name = free_name(folder, path.name, taken)
            shutil.copy2(path, folder / file_name)
            rows.append((f"{label}/{file_name}", label, "train", kind, str(path)))
        pd.DataFrame(rows, columns=SPLIT_COLUMNS).to_csv(staging / "split.csv", index=False)
    return Version(target, rows, len(pseudo) - len(kept_pseudo), already_in)
