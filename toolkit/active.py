"""Active learning: which pool images a person should label next, which ones the model may label
itself, and a new dataset version holding both. 6_active.py queries, ingests and (with
toolkit/simulation.py) simulates rounds through these functions.

Acquisition: a score for every pool image, the K highest are queried.
  entropy           -sum_c p_c log p_c of the predicted probabilities (nats)
  margin            1 - (p_top1 - p_top2): a small margin between the two likeliest classes scores high
  least-confidence  1 - p_top1
  random            a uniform draw, reproducible by --seed
  kcenter           greedy core-set (Sener & Savarese, ICLR 2018) on the penultimate-layer features:
                    each pick is the pool image farthest from the training images and the picks so
                    far; its score is that distance
With balancing the budget is spread over the predicted classes in inverse proportion to their
training counts (`balanced_quotas`), and each class's share goes to its highest-scoring images.

Pseudo-labels: FixMatch's confidence threshold (Sohn et al., NeurIPS 2020: keep the images whose
top probability is at least tau, default 0.95), then CReST's class-rebalancing rate (Wei et al.,
CVPR 2021, "CReST: A Class-Rebalancing Self-Training Framework for Imbalanced Semi-Supervised
Learning", eq. 2): with the classes sorted by training count N_1 >= ... >= N_L, the l-th keeps
its most confident floor(mu_l * m_l) of its m_l candidates, mu_l = (N_{L+1-l} / N_1) ** alpha.
The rarest class keeps all of its candidates, the most frequent the fraction
(N_L / N_1) ** alpha, so pseudo-labels do not swamp the tail; alpha = 1/3 as in CReST (the
reference implementation in Microsoft's USB writes it as 1 / crest_alpha with crest_alpha = 3);
alpha = 0 is the FixMatch threshold alone.
"""
import hashlib
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import entr

import get_model
from toolkit import files, runs
from toolkit.cli import DATA_ROOT, UserError, progress_bar
from toolkit.data import (
    SPLITS,
    ImageSet,
    Split,
    dataset_dir,
    load_images,
    scan_split,
)
from toolkit.files import write_csv, write_json
from toolkit.images import IMAGE_EXTENSIONS, decode_image, images_in, is_image
from toolkit.predictor import Predictor

ACQUISITIONS = ("entropy", "margin", "least-confidence", "random", "kcenter")
BALANCED = "-balanced"  # a strategy name's suffix in --simulate: entropy-balanced
PSEUDO_THRESHOLD = 0.95
PSEUDO_ALPHA = 1 / 3
QUERY_COLUMNS = ["rank", "path", "score", "predicted", "probability", "label"]
PSEUDO_COLUMNS = ["path", "label", "probability"]
SPLIT_COLUMNS = ["path", "class", "split", "source", "origin"]
SOURCES = ("original", "labelled", "pseudo")


# ---------------------------------------------------------------- acquisition

def acquisition_scores(acquisition: str, probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """One score per row of `probs` (N, K), higher = query first (kcenter is not a per-image
    score: see kcenter_greedy)."""
    probs = np.asarray(probs, dtype=np.float64)
    if acquisition == "entropy":
        return entr(probs).sum(axis=1)
    if acquisition == "margin":
        top = -np.sort(-probs, axis=1)
        second = top[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
        return 1.0 - (top[:, 0] - second)
    if acquisition == "least-confidence":
        return 1.0 - probs.max(axis=1)
    if acquisition == "random":
        return np.random.default_rng(seed).random(len(probs))
    raise ValueError(f"no per-image score for acquisition {acquisition!r}")


def balanced_quotas(train_counts, available, budget: int) -> np.ndarray:
    """Queries per class: min(budget, pool size) spread over the classes in proportion to
    1 / training count, no class given more than the pool images predicted as it (`available`);
    what a full class cannot take goes to the others in the same proportion (water-filling), and
    the integers are rounded by largest remainder (ties: the rarer class first), so they sum to
    the budget exactly."""
    counts = np.asarray(train_counts, dtype=np.float64)
    available = np.asarray(available, dtype=np.int64)
    weights = 1.0 / np.maximum(counts, 1.0)
    total = int(min(budget, available.sum()))
    full = np.zeros(len(counts), dtype=bool)
    while True:
        open_ = ~full & (available > 0)
        remaining = total - available[full].sum()
        share = np.zeros(len(counts))
        if open_.any():
            share[open_] = remaining * weights[open_] / weights[open_].sum()
        newly_full = open_ & (share >= available)
        if not newly_full.any():
            break
        full |= newly_full
    quotas = np.where(full, available, np.floor(share + 1e-9).astype(np.int64))
    left = total - int(quotas.sum())
    order = sorted(np.flatnonzero(open_), key=lambda c: (-(share[c] - quotas[c]), -weights[c], c))
    for c in order[:left]:
        quotas[c] += 1
    return quotas


def min_distances(points: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of every point to its nearest centre."""
    if len(centres) == 0:
        return torch.full((len(points),), math.inf, dtype=points.dtype)
    return torch.cat([torch.cdist(part, centres).min(dim=1).values for part in points.split(chunk)]) \
        if len(points) else torch.empty(0, dtype=points.dtype)


def kcenter_greedy(features, labelled_features=None, budget: int = 1, classes=None, quotas=None) -> tuple:
    """Greedy k-center (core-set) selection: (picked indices in pick order, the distance of each
    to the nearest labelled or earlier-picked point when it was picked). Without labelled points
    the first pick is the point farthest from the mean. With `quotas`, a point of class
    `classes[i]` is only picked while its class has quota left."""
    points = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    budget = min(int(budget), len(points))
    first_pick = labelled_features is None or not len(labelled_features)
    if first_pick:
        distance = (points - points.mean(dim=0)).norm(dim=1)
    else:
        distance = min_distances(points, torch.as_tensor(np.asarray(labelled_features), dtype=torch.float64))
    left = None if quotas is None else np.array(quotas, dtype=np.int64)
    available = torch.ones(len(points), dtype=torch.bool)
    picked, scores = [], []
    while len(picked) < budget:
        allowed = available.clone()
        if left is not None:
            allowed &= torch.as_tensor(left[np.asarray(classes)] > 0)
        if not allowed.any():
            break
        index = int(torch.where(allowed, distance, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
        picked.append(index)
        scores.append(float(distance[index]))
        available[index] = False
        if left is not None:
            left[classes[index]] -= 1
        to_pick = (points - points[index]).norm(dim=1)
        distance = to_pick if first_pick else torch.minimum(distance, to_pick)
        first_pick = False
    return np.array(picked, dtype=np.int64), np.array(scores)


def select(acquisition: str, probs, budget: int, seed: int = 0, features=None, labelled_features=None,
           quotas=None) -> tuple:
    """The images to query: (indices, scores), highest score first, min(budget, N) of them. With
    `quotas` (balanced_quotas of the predicted classes), at most quotas[c] of predicted class c."""
    probs = np.asarray(probs, dtype=np.float64)
    budget = min(int(budget), len(probs))
    predicted = probs.argmax(axis=1)
    if acquisition == "kcenter":
        if features is None:
            raise ValueError("kcenter needs the pool's features")
        return kcenter_greedy(features, labelled_features, budget, predicted, quotas)
    scores = acquisition_scores(acquisition, probs, seed)
    order = np.argsort(-scores, kind="stable")
    if quotas is None:
        order = order[:budget]
    else:
        left, picked = np.array(quotas, dtype=np.int64), []
        for index in order:
            if len(picked) == budget:
                break
            if left[predicted[index]] > 0:
                left[predicted[index]] -= 1
                picked.append(index)
        order = np.array(picked, dtype=np.int64)
    return order, scores[order]


def parse_strategy(name: str) -> tuple:
    """A simulation strategy's (acquisition, balanced): 'entropy' or 'entropy-balanced'."""
    balanced = name.endswith(BALANCED)
    acquisition = name[:-len(BALANCED)] if balanced else name
    if acquisition not in ACQUISITIONS:
        raise UserError(f"unknown strategy {name!r}: use one of {', '.join(ACQUISITIONS)}, each optionally "
                        f"with the suffix {BALANCED} (e.g. entropy{BALANCED})")
    return acquisition, balanced


# ---------------------------------------------------------------- pseudo-labels

def crest_rates(train_counts, alpha: float = PSEUDO_ALPHA) -> np.ndarray:
    """CReST's per-class rate mu: the class of count rank l (1 = most frequent) keeps
    (N_{L+1-l} / N_1) ** alpha of its pseudo-label candidates."""
    counts = np.asarray(train_counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    rates = np.empty(len(counts))
    rates[order] = (counts[order[::-1]] / max(counts[order[0]], 1.0)) ** alpha
    return rates


def pseudo_labels(probs, threshold: float, train_counts, alpha: float = PSEUDO_ALPHA, exclude=()) -> tuple:
    """(indices, labels) of the pseudo-labelled rows of `probs`: top probability >= threshold
    (FixMatch), not in `exclude`, then per predicted class its most confident
    floor(crest_rates[c] * candidates) (CReST). Most confident first."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    candidate = confidence >= threshold
    candidate[np.asarray(list(exclude), dtype=np.int64)] = False
    rates = crest_rates(train_counts, alpha)
    kept = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(candidate & (predicted == c))
        members = members[np.argsort(-confidence[members], kind="stable")]
        kept += members[:int(math.floor(rates[c] * len(members) + 1e-9))].tolist()
    kept = np.array(sorted(kept, key=lambda i: (-confidence[i], i)), dtype=np.int64)
    return kept, predicted[kept]


# ---------------------------------------------------------------- features

def logits_and_features(predictor, image_set: ImageSet, batch_size: int = 128, workers: int = 2, progress=True,
                        desc="predict") -> tuple:
    """(float32 logits, penultimate-layer features) of every image of the set, on the CPU. The
    features are the input of the model's classifier layer (get_model.classifier_layer), caught
    with a forward hook; a convolutional classifier's input is averaged over its map."""
    captured = []

    def keep_input(module, inputs, output):
        x = inputs[0].detach()
        if x.ndim == 4:
            x = x.float().mean(dim=(2, 3))
        captured.append(x.float().flatten(1).cpu())

    handle = get_model.classifier_layer(predictor.model).register_forward_hook(keep_input)
    try:
        _, logits = predictor.predict(image_set, batch_size, workers, progress, desc)
    finally:
        handle.remove()
    features = torch.cat(captured) if captured else torch.empty(0, 0)
    return logits, features


# ---------------------------------------------------------------- the pool

def content_hash(path: Path) -> str | None:
    """The SHA-256 of a file's bytes; None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def hashes_of(paths: list, workers: int = 2, progress=True, desc="hash") -> list:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(progress_bar(pool.map(content_hash, paths), progress, total=len(paths), desc=desc, unit="img"))


def dataset_hashes(dataset: Path, workers: int = 2, progress=True) -> set:
    """The content hashes of every image of a dataset's splits."""
    paths = [p for split in SPLITS if (Path(dataset) / split).is_dir() for p in images_in(Path(dataset) / split)[0]]
    return set(hashes_of(paths, workers, progress, desc=f"hash {Path(dataset).name}")) - {None}


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
    """queries.csv: rank, path (absolute), score, predicted class, its probability (0-1), an
    empty label for the person to fill in; highest score first."""
    probs = np.asarray(probs)
    return [{"rank": rank, "path": str(Path(paths[i]).resolve()), "score": float(score),
             "predicted": class_names[int(probs[i].argmax())], "probability": float(probs[i].max()), "label": ""}
            for rank, (i, score) in enumerate(zip(picked, scores), start=1)]


def pseudo_rows(paths, probs, indices, labels, class_names) -> list:
    """pseudo_labels.csv: path (absolute), label (the predicted class), probability (0-1)."""
    probs = np.asarray(probs)
    return [{"path": str(Path(paths[i]).resolve()), "label": class_names[int(c)], "probability": float(probs[i].max())}
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


def run_dataset(run_dir: Path, record, data_root=None) -> Path:
    """The folder of the dataset a run was trained on: below `data_root`, else the run's own."""
    recorded = runs.read_args(run_dir)
    root = Path(data_root or recorded.get("data_root") or DATA_ROOT)
    folder = root / (record.dataset or "")
    if not record.dataset or not (folder / "train").is_dir():
        raise UserError(f"the run's dataset {record.dataset!r} is not at {folder}; pass --data-root, the folder "
                        f"holding it (its images are needed to skip pool images it already holds)")
    return folder


@dataclass
class Query:
    """A query's outcome: the rows of queries.csv and pseudo_labels.csv, the per-class table."""
    predictor: Predictor
    dataset: Path
    pool: Pool
    queries: list
    pseudo: list
    table: pd.DataFrame


def query_pool(run_dir: Path, pool_dir: Path, budget: int, acquisition="entropy", balance=False,
               threshold=PSEUDO_THRESHOLD, alpha=PSEUDO_ALPHA, seed=0, data_root=None, device="auto",
               precision="fp32", batch_size=128, workers=2, cache_gb=4.0, progress=True) -> Query:
    """Predict the pool with the run's best checkpoint (images the run's dataset already holds
    skipped by content), choose `budget` queries by `acquisition` (balanced over the predicted
    classes with `balance`) and pseudo-label the confident rest."""
    predictor = Predictor.of_run(run_dir, device=device, precision=precision)
    record = predictor.record
    dataset = run_dataset(run_dir, record, data_root)
    pool = read_pool(pool_dir, record.height, record.width, dataset_hashes(dataset, workers, progress), workers,
                     progress)
    if not pool.paths:
        raise UserError(f"nothing to query in {pool_dir}: of its {len(pool.in_dataset) + len(pool.duplicates) + len(pool.unreadable)}"
                        f" images, {len(pool.in_dataset)} are already in {dataset.name}, {len(pool.duplicates)} "
                        f"are duplicates and {len(pool.unreadable)} unreadable")
    images = pool.image_set(record.class_names, predictor.device)
    train_counts = record.class_counts
    labelled_features = features = None
    if acquisition == "kcenter" or train_counts is None:
        train = load_images(scan_split(dataset, "train", record.class_names), record.height, record.width,
                            predictor.device, cache_gb, workers, progress)
        train_counts = train_counts or train.split.class_counts()
    if acquisition == "kcenter":
        logits, features = logits_and_features(predictor, images, batch_size, workers, progress, desc="pool")
        labelled_features = logits_and_features(predictor, train, batch_size, workers, progress, desc="train")[1]
    else:
        logits = predictor.predict(images, batch_size, workers, progress, desc="pool")[1]
    probs = logits.softmax(dim=1).numpy()
    predicted = probs.argmax(axis=1)
    k = len(record.class_names)
    quotas = balanced_quotas(train_counts, np.bincount(predicted, minlength=k), budget) if balance else None
    picked, scores = select(acquisition, probs, budget, seed, features, labelled_features, quotas)
    pseudo, pseudo_classes = pseudo_labels(probs, threshold, train_counts, alpha, exclude=picked)
    return Query(predictor, dataset, pool, query_rows(pool.paths, probs, picked, scores, record.class_names),
                 pseudo_rows(pool.paths, probs, pseudo, pseudo_classes, record.class_names),
                 class_table(record.class_names, train_counts, predicted, picked, pseudo_classes))


def write_query(folder: Path, found: Query, settings: dict):
    """queries.csv, pseudo_labels.csv and query.json (what asked: the checkpoint, the settings,
    the images passed over); an existing queries.csv (maybe labelled by now) is kept."""
    folder = Path(folder)
    if (folder / "queries.csv").exists():
        raise UserError(f"{folder / 'queries.csv'} exists (its labels may be filled in already); "
                        f"pass another --output")
    pool = found.pool
    write_json(folder / "query.json", {
        **settings, "checkpoint": found.predictor.path, "dataset": found.dataset, "pool_images": len(pool.paths),
        "in_dataset": pool.in_dataset, "duplicates": pool.duplicates,
        "unreadable": [f"{path}: {reason}" for path, reason in pool.unreadable],
        "table": found.table.to_dict("records")})
    write_csv(folder / "pseudo_labels.csv", found.pseudo, PSEUDO_COLUMNS)
    write_csv(folder / "queries.csv", found.queries, QUERY_COLUMNS)


# ---------------------------------------------------------------- a new dataset version

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
    rows, bad_labels, bad_files, chosen = [], [], [], {}
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
            bad_labels.append(f"line {line}: {path.name} labelled both {chosen[path]!r} and {label!r}")
        elif path not in chosen:
            chosen[path] = label
            rows.append((path, label))
    if bad_labels:
        raise UserError(f"{option} {csv_path}: {len(bad_labels)} label(s) that are not a class of {dataset} "
                        f"({summarised(bad_labels)}); its classes are {', '.join(class_names)}")
    if bad_files:
        raise UserError(f"{option} {csv_path}: {len(bad_files)} file(s) missing ({summarised(bad_files)})")
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


def ingest(labels_csv: Path, data_root: Path, name: str, new: str, pseudo_csv: Path = None, overwrite=False,
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
    return build_version(data_root, name, new, labelled, pseudo, overwrite, workers, progress)


def build_version(data_root: Path, name: str, new: str, labelled: list, pseudo: list = (), overwrite=False,
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
