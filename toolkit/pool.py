"""A query of a real pool: the unlabelled images scanned by content hash (those the run's dataset
already holds, duplicates and unreadable files passed over), predicted by a run's best checkpoint
with its penultimate-layer features (Predictor.predict_with_features), chosen by toolkit/acquisition.py,
and written as queries.csv, pseudo_labels.csv and query.json. 6_active.py's default mode.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit.acquisition import PSEUDO_ALPHA, PSEUDO_THRESHOLD, balanced_quotas, pseudo_labels, select
from toolkit.cli import UserError, counted, plural, progress_bar
from toolkit.data import ImageSet, Split, dataset_hashes, load_images, scan_split
from toolkit.evaluation import run_dataset
from toolkit.files import write_csv, write_json
from toolkit.images import IMAGE_EXTENSIONS, decode_image, hashes_of, images_in
from toolkit.predictor import Predictor

QUERY_COLUMNS = ["rank", "path", "score", "predicted", "probability", "label"]
PSEUDO_COLUMNS = ["path", "label", "probability"]


# ---------------------------------------------------------------- the pool

@dataclass
class Pool:
    """The unlabelled images to predict, decoded, and those passed over."""
    paths: list
    images: torch.Tensor  # uint8 (N, 3, H, W)
    in_dataset: list = field(default_factory=list)  # content already in the run's dataset
    duplicates: list = field(default_factory=list)  # content of an earlier pool image
    unreadable: list = field(default_factory=list)  # (path, reason)
    other_files: int = 0

    def image_set(self, class_names, device) -> ImageSet:
        labels = torch.zeros(len(self.paths), dtype=torch.long)
        split = Split("pool", Path("."), list(class_names), self.paths, labels)
        return ImageSet(split, labels.to(device), images=self.images.to(device))


def read_pool(folder: Path, height: int, width: int, known_hashes: set, workers: int = 2, progress=True) -> Pool:
    """Every image below `folder` (recursively, hidden files passed over) whose content is not in
    `known_hashes` nor an earlier pool image's, decoded as in training; unreadable ones are
    listed, not fatal."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--pool {folder}: no such folder; pass the folder of unlabelled images")
    paths, others = images_in(folder)
    if not paths:
        raise UserError(f"--pool {folder} holds no images (images end in {', '.join(IMAGE_EXTENSIONS)})")
    seen, kept, in_dataset, duplicates, unreadable = set(), [], [], [], []
    for path, digest in zip(paths, hashes_of(paths, workers, progress, desc="hash pool")):
        if digest is None:
            unreadable.append((path, "cannot be read"))
        elif digest in known_hashes:
            in_dataset.append(path)
        elif digest in seen:
            duplicates.append(path)
        else:
            seen.add(digest)
            kept.append(path)

    def decode(path):
        try:
            return torch.from_numpy(decode_image(path, height, width)).permute(2, 0, 1)
        except UserError as e:
            return str(e)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(progress_bar(pool.map(decode, kept), progress, total=len(kept), desc="decode pool", unit="img"))
    unreadable += [(p, image) for p, image in zip(kept, decoded) if isinstance(image, str)]
    good = [(p, image) for p, image in zip(kept, decoded) if not isinstance(image, str)]
    images = torch.stack([image for _, image in good]) if good else torch.empty(0, 3, height, width, dtype=torch.uint8)
    return Pool([p for p, _ in good], images, in_dataset, duplicates, unreadable, others)


# ---------------------------------------------------------------- the query's files

def query_rows(paths, probs, picked, scores, class_names) -> list:
    """queries.csv: rank, path (absolute), score, predicted class, its probability (in %, as
    5_predict.py writes it), an empty label for the person to fill in; highest score first."""
    probs = np.asarray(probs)
    return [{"rank": rank, "path": str(Path(paths[i]).resolve()), "score": float(score),
             "predicted": class_names[int(probs[i].argmax())], "probability": 100.0 * float(probs[i].max()),
             "label": ""}
            for rank, (i, score) in enumerate(zip(picked, scores), start=1)]


def pseudo_rows(paths, probs, indices, labels, class_names) -> list:
    """pseudo_labels.csv: path (absolute), label (the predicted class), probability (in %)."""
    probs = np.asarray(probs)
    return [{"path": str(Path(paths[i]).resolve()), "label": class_names[int(c)],
             "probability": 100.0 * float(probs[i].max())}
            for i, c in zip(indices, labels)]


def class_table(class_names, train_counts, predicted, picked, pseudo_labelled) -> pd.DataFrame:
    """Per class: training images, pool images predicted as it, queries and pseudo-labels."""
    k = len(class_names)
    predicted = np.asarray(predicted, dtype=np.int64)
    table = pd.DataFrame({
        "class": list(class_names),
        "train": list(train_counts),
        "pool (predicted)": np.bincount(predicted, minlength=k),
        "queries": np.bincount(predicted[np.asarray(picked, dtype=np.int64)], minlength=k),
        "pseudo-labels": np.bincount(np.asarray(pseudo_labelled, dtype=np.int64), minlength=k),
    })
    total = {"class": "total", **{c: int(table[c].sum()) for c in table.columns[1:]}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


@dataclass
class QuerySettings:
    """What a query is asked: the run whose best checkpoint predicts, the pool, the budget and how
    to spend it, the pseudo-label rule, and where and how to predict (6_active.py's arguments)."""
    run: Path
    pool: Path
    budget: int
    acquisition: str = "entropy"
    balance: bool = False
    pseudo_threshold: float = PSEUDO_THRESHOLD
    pseudo_alpha: float = PSEUDO_ALPHA
    seed: int = 0  # of --acquisition random
    data_root: Path | None = None  # the run's dataset is below it (default: the run's own data root)
    device: str = "auto"
    precision: str = "fp32"
    batchsize: int = 128
    workers: int = 2
    cache_gb: float = 4.0
    progress: bool = True

    RECORDED = ("run", "pool", "budget", "acquisition", "balance", "pseudo_threshold", "pseudo_alpha", "seed",
                "precision")  # what query.json keeps: what decides the outcome, not where it ran

    def recorded(self) -> dict:
        return {name: getattr(self, name) for name in self.RECORDED}


@dataclass
class Query:
    """A query's outcome: the rows of queries.csv and pseudo_labels.csv, the per-class table."""
    settings: QuerySettings
    predictor: Predictor
    dataset: Path
    pool: Pool
    queries: list
    pseudo: list
    table: pd.DataFrame


def query_pool(asked: QuerySettings) -> Query:
    """Predict the pool with the run's best checkpoint (images the run's dataset already holds
    skipped by content), choose the budget's queries by the acquisition (balanced over the
    predicted classes with `balance`) and pseudo-label the confident rest."""
    predictor = Predictor.of_run(asked.run, device=asked.device, precision=asked.precision)
    record = predictor.record
    dataset = run_dataset(asked.run, asked.data_root, remedy="pass --data-root, the folder holding it (its images "
                                                          "are needed to skip pool images it already holds)")
    workers, progress = asked.workers, asked.progress
    pool = read_pool(asked.pool, record.height, record.width, dataset_hashes(dataset, workers, progress), workers,
                     progress)
    if not pool.paths:
        passed_over = len(pool.in_dataset) + len(pool.duplicates) + len(pool.unreadable)
        raise UserError(f"nothing to query in {asked.pool}: of its {counted(passed_over, 'image')}, "
                        f"{len(pool.in_dataset)} already in {dataset.name}, {len(pool.duplicates)} "
                        f"{plural(len(pool.duplicates), 'duplicate')} and {len(pool.unreadable)} unreadable")
    images = pool.image_set(record.class_names, predictor.device)
    train_counts = record.class_counts
    labelled_features = features = None
    kcenter = asked.acquisition == "kcenter"
    if kcenter or train_counts is None:
        train = load_images(scan_split(dataset, "train", record.class_names), record.height, record.width,
                            predictor.device, asked.cache_gb, workers, progress)
        train_counts = train_counts or train.split.class_counts()
    if kcenter:
        _, logits, features = predictor.predict_with_features(images, asked.batchsize, workers, progress, desc="pool")
        labelled_features = predictor.predict_with_features(train, asked.batchsize, workers, progress, desc="train")[2]
    else:
        logits = predictor.predict(images, asked.batchsize, workers, progress, desc="pool")[1]
    probs = logits.softmax(dim=1).numpy()
    predicted = probs.argmax(axis=1)
    k = len(record.class_names)
    quotas = balanced_quotas(train_counts, np.bincount(predicted, minlength=k), asked.budget) if asked.balance else None
    picked, scores = select(asked.acquisition, probs, asked.budget, asked.seed, features, labelled_features, quotas)
    pseudo, pseudo_classes = pseudo_labels(probs, asked.pseudo_threshold, train_counts, asked.pseudo_alpha,
                                           exclude=picked)
    return Query(asked, predictor, dataset, pool, query_rows(pool.paths, probs, picked, scores, record.class_names),
                 pseudo_rows(pool.paths, probs, pseudo, pseudo_classes, record.class_names),
                 class_table(record.class_names, train_counts, predicted, picked, pseudo_classes))


def write_query(folder: Path, found: Query):
    """queries.csv, pseudo_labels.csv and query.json (what asked: the checkpoint, the settings,
    the images passed over); an existing queries.csv (maybe labelled by now) is kept."""
    folder = Path(folder)
    if (folder / "queries.csv").exists():
        raise UserError(f"{folder / 'queries.csv'} exists (its labels may be filled in already); "
                        f"pass another --output")
    pool = found.pool
    write_json(folder / "query.json", {
        **found.settings.recorded(), "checkpoint": found.predictor.path, "dataset": found.dataset,
        "pool_images": len(pool.paths), "in_dataset": pool.in_dataset, "duplicates": pool.duplicates,
        "unreadable": [f"{path}: {reason}" for path, reason in pool.unreadable],
        "table": found.table.to_dict("records")})
    write_csv(folder / "pseudo_labels.csv", found.pseudo, PSEUDO_COLUMNS)
    write_csv(folder / "queries.csv", found.queries, QUERY_COLUMNS)
