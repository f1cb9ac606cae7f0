"""Image folders -> finished batches: scan and validate the splits, decode, cache, image sets,
normalise, and batches ready for the model.

A split is decoded once into a uint8 tensor (N, 3, H, W) and cached beside the dataset in
`<dataset>/.cache/`; every epoch then only gathers batches from that tensor on the device, augments
them there (augment.py) and normalises them. Splits too large for `--cache-gb` stream through a
DataLoader instead, with the same batch augmentation.
"""
import hashlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from toolkit.cli import UserError, progress_bar
from toolkit.files import save_tensors, write_json
from toolkit.images import class_folders, decode_image, hashes_of, images_in, warn_skipped

SPLITS = ("train", "valid", "test")
CACHE_VERSION = 1  # bump when decoding changes, so old caches are rebuilt


@dataclass
class Split:
    """The files of one split: paths[i] has class labels[i]; class names are the folder names."""
    name: str
    root: Path
    class_names: list
    paths: list
    labels: torch.Tensor

    def class_counts(self) -> list:
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()


# ---------------------------------------------------------------- scan and validate

def dataset_dir(data_root: Path, name: str) -> Path:
    """The folder of dataset `name`; the error lists the datasets that exist."""
    folder = Path(data_root) / name
    if not name or not folder.is_dir():
        existing = sorted(p.name for p in Path(data_root).glob("*") if (p / "train").is_dir())
        listed = ", ".join(existing) if existing else "none yet"
        raise UserError(f"no dataset '{name}' in {data_root} (datasets there: {listed}); "
                        f"create one with: python 0_data_split.py --dataset={name or 'NAME'}")
    return folder


def scan_split(dataset: Path, split: str, class_names=None) -> Split:
    """List the images of one split; class folders must match `class_names` when given."""
    root = Path(dataset) / split
    if not root.is_dir():
        raise UserError(f"dataset {dataset.name} has no '{split}' split ({root} is missing); "
                        f"make it with: python 0_data_split.py --dataset={dataset.name}")
    folders = class_folders(root)
    if not folders:
        raise UserError(f"{root} holds no class folders; put each class's images in {root}/<class>/")
    names = [p.name for p in folders]
    if class_names is not None and names != list(class_names):
        raise UserError(f"class folders of {root} differ from the training split's: "
                        f"{describe_difference(class_names, names)}; every split needs the same class folders")
    paths, labels, skipped = [], [], 0
    for label, folder in enumerate(folders):
        images, others = images_in(folder)
        skipped += others
        if not images:
            raise UserError(f"class folder {folder} holds no images; add images or remove the folder "
                            f"(from every split)")
        paths += images
        labels += [label] * len(images)
    warn_skipped(skipped, root)
    return Split(split, root, names, paths, torch.tensor(labels, dtype=torch.long))


def describe_difference(expected, found) -> str:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(repr(c) for c in missing))
    if extra:
        parts.append("extra " + ", ".join(repr(c) for c in extra))
    return "; ".join(parts) or "same names in another order"


def scan_dataset(dataset: Path, splits=("train", "valid")) -> dict:
    """Scan several splits, checking each against the training split's class folders."""
    train = scan_split(dataset, "train")
    found = {"train": train}
    for split in splits:
        if split != "train":
            found[split] = scan_split(dataset, split, train.class_names)
    return found


def evaluation_split(dataset: Path, warn=True) -> str:
    """The split a trained run is judged on: test, or valid (with a warning) when there is none."""
    if (Path(dataset) / "test").is_dir():
        return "test"
    if warn:
        warnings.warn(f"{dataset} has no test split; evaluating the valid split instead", stacklevel=2)
    return "valid"


def dataset_hashes(dataset: Path, workers: int = 2, progress=True) -> set:
    """The content hashes of every image of a dataset's splits."""
    paths = [p for split in SPLITS if (Path(dataset) / split).is_dir() for p in images_in(Path(dataset) / split)[0]]
    return set(hashes_of(paths, workers, progress, desc=f"hash {Path(dataset).name}")) - {None}


# ---------------------------------------------------------------- decode

def decode_split(split: Split, height: int, width: int, workers: int = 2, progress=True) -> torch.Tensor:
    """Decode every image of a split into one uint8 tensor (N, 3, H, W)."""
    images = torch.empty((len(split.paths), 3, height, width), dtype=torch.uint8)

    def decode_into(index_path):
        index, path = index_path
        images[index] = torch.from_numpy(decode_image(path, height, width)).permute(2, 0, 1)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = pool.map(decode_into, enumerate(split.paths))
        for _ in progress_bar(jobs, progress, total=len(split.paths), desc=f"decode {split.name}", unit="img"):
            pass
    return images


# ---------------------------------------------------------------- cache

def fingerprint(split: Split, height: int, width: int) -> str:
    """Changes when any image is added, removed, renamed, rewritten, or the size asked changes."""
    digest = hashlib.sha1(f"v{CACHE_VERSION} {height}x{width}".encode())
    for path, label in zip(split.paths, split.labels.tolist()):
        stat = path.stat()
        digest.update(f"{path.relative_to(split.root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_dir(split: Split) -> Path:
    return split.root.parent / ".cache"


def cached_images(split: Split, height: int, width: int, workers: int = 2, progress=True) -> torch.Tensor:
    """The split's decoded images, from the cache when it is current, else decoded and cached."""
    key = fingerprint(split, height, width)
    path = cache_dir(split) / f"{split.name}-{height}x{width}.pt"
    if path.exists():
        try:
            stored = torch.load(path, weights_only=True)
            if stored.get("fingerprint") == key:
                return stored["images"]
        except Exception:  # an unreadable cache is rebuilt, never trusted
            pass
    images = decode_split(split, height, width, workers, progress)
    try_write(path, lambda target: save_tensors(target, {"fingerprint": key, "images": images}))
    return images


def try_write(path: Path, write):
    """Write a cache file; a read-only dataset folder only costs the cache, with a warning."""
    try:
        write(path)
    except UserError as e:
        warnings.warn(f"{e}; images will be decoded again next time", stacklevel=2)


def compute_channel_stats(chunks) -> tuple:
    """Mean and std per channel over all pixels of an iterable of uint8 (n, 3, H, W) tensors."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for chunk in chunks:
        values = chunk.to(torch.float64) / 255.0
        total += values.sum(dim=(0, 2, 3))
        squares += (values ** 2).sum(dim=(0, 2, 3))
        count += values.shape[0] * values.shape[2] * values.shape[3]
    mean = total / count
    std = (squares / count - mean ** 2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------- image sets: in memory or streamed

class StreamedImages(torch.utils.data.Dataset):
    """Decodes images on demand, for splits larger than --cache-gb."""

    def __init__(self, split: Split, height: int, width: int):
        self.paths, self.labels, self.size = split.paths, split.labels, (height, width)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        pixels = decode_image(self.paths[index], *self.size)
        return torch.from_numpy(pixels).permute(2, 0, 1), self.labels[index]


@dataclass
class ImageSet:
    """One split ready for batching: decoded in memory (`images`) or `streamed`. A `subset` of
    another set holds some of its images, maybe relabelled; the caches of the whole split (keyed
    by its files) are not its own."""
    split: Split
    labels: torch.Tensor
    images: torch.Tensor = None
    streamed: StreamedImages = None
    subset: bool = False

    def __len__(self):
        return len(self.labels)

    @property
    def size(self) -> tuple:
        """(height, width) of its images: the training size, or the larger training cache of the
        resized crops (augment.cache_size)."""
        return tuple(self.images.shape[-2:]) if self.images is not None else self.streamed.size


def load_images(split: Split, height: int, width: int, device, cache_gb: float = 4.0,
                workers: int = 2, progress=True) -> ImageSet:
    """Hold the split in (device) memory when it fits under cache_gb, else stream it."""
    size_gb = len(split.paths) * 3 * height * width / 2 ** 30
    labels = split.labels.to(device)
    if size_gb > cache_gb:
        why = "--cache-gb 0" if cache_gb == 0 else f"{size_gb:.1f} GB decoded exceeds --cache-gb {cache_gb:g}"
        print(f"{split.name}: {why}; streaming from disk")
        return ImageSet(split, labels, streamed=StreamedImages(split, height, width))
    images = cached_images(split, height, width, workers, progress)
    return ImageSet(split, labels, images=images.to(device))


def subset(image_set: ImageSet, indices, labels=None) -> ImageSet:
    """The images at `indices`, in that order, with their labels or the `labels` given (class
    indices of the same class names): no image decoded again."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    split = image_set.split
    labels = split.labels[indices] if labels is None else torch.as_tensor(labels, dtype=torch.long)
    part = Split(split.name, split.root, split.class_names, [split.paths[i] for i in indices.tolist()], labels)
    on_device = labels.to(image_set.labels.device)
    if image_set.images is not None:
        return ImageSet(part, on_device, images=image_set.images[indices.to(image_set.images.device)], subset=True)
    return ImageSet(part, on_device, streamed=StreamedImages(part, *image_set.streamed.size), subset=True)


def training_stats(image_set: ImageSet, height: int, width: int) -> tuple:
    """Per-channel mean and std of the training images in [0, 1], cached beside the dataset (a
    subset's are computed, never cached: it is not the dataset's split)."""
    if image_set.subset:
        return compute_channel_stats(image_chunks(image_set))
    split = image_set.split
    key = fingerprint(split, height, width)
    path = cache_dir(split) / f"stats-{height}x{width}.json"
    try:
        stored = json.loads(path.read_text())
        if stored["fingerprint"] == key:
            return stored["mean"], stored["std"]
    except (OSError, ValueError, KeyError):
        pass
    mean, std = compute_channel_stats(image_chunks(image_set))
    try_write(path, lambda target: write_json(target, {"fingerprint": key, "mean": mean, "std": std}))
    return mean, std


def image_chunks(image_set: ImageSet):
    """The set's uint8 images, a chunk at a time (the statistics' input)."""
    if image_set.images is not None:
        return image_set.images.split(1024)
    return progress_bar((image_set.streamed[i][0][None] for i in range(len(image_set))), total=len(image_set),
                        desc="channel stats")


def gather(image_set: ImageSet, order: torch.Tensor, batch_size: int, workers: int = 2):
    """Yield (uint8 images, labels) on the image set's device, in the given index order."""
    chunks = order.split(batch_size)
    device = image_set.labels.device
    if image_set.images is not None:
        for chunk in chunks:
            chunk = chunk.to(image_set.images.device)
            yield image_set.images[chunk], image_set.labels[chunk]
        return
    loader = torch.utils.data.DataLoader(
        image_set.streamed, batch_sampler=[c.tolist() for c in chunks], num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False)
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


# ---------------------------------------------------------------- normalise and finished batches

class Normalise(torch.nn.Module):
    """uint8 images -> float, normalised with the training set's per-channel mean and std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, images):
        return (images.float() - self.mean) / self.std


def model_inputs(images: torch.Tensor, normalise: Normalise, memory_format) -> torch.Tensor:
    """uint8 images as the model takes them: normalised floats in its memory format."""
    return normalise(images).contiguous(memory_format=memory_format)


@dataclass
class Batches:
    """Finished batches of one image set: gathered on the device, augmented (for training),
    normalised with the training statistics, in the model's memory format."""
    image_set: ImageSet
    normalise: Normalise
    memory_format: torch.memory_format = torch.contiguous_format
    augment: Callable | None = None  # (uint8 batch, generator) -> uint8 batch
    workers: int = 2

    def __len__(self):
        return len(self.image_set)

    @property
    def labels(self) -> torch.Tensor:
        return self.image_set.labels

    @property
    def num_classes(self) -> int:
        return len(self.image_set.split.class_names)

    def __call__(self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
        """Yield (inputs, labels) for the images of `order`, batch after batch."""
        for images, labels in gather(self.image_set, order, batch_size, self.workers):
            if self.augment is not None:
                images = self.augment(images, generator)
            yield model_inputs(images, self.normalise, self.memory_format), labels
