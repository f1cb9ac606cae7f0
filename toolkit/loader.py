"""Image folders -> tensors: scan and validate, decode, cache, augment, normalise, sample.

A split is decoded once into a uint8 tensor (N, 3, H, W) and cached beside the dataset in
`<dataset>/.cache/`; every epoch then only gathers batches from that tensor and augments them
with tensor ops on the device (random crop with 4-pixel padding, horizontal flip). Splits too
large for `--cache-gb` stream through a DataLoader instead, with the same batch augmentation.
"""
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from toolkit.cli import UserError, progress_bar

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CROP_PADDING = 4
CACHE_VERSION = 1  # bump when decoding changes, so old caches are rebuilt
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# The user's own images may be large; they are resized at once, so no decompression-bomb guard.
Image.MAX_IMAGE_PIXELS = None


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


def class_folders(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


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
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        images = [p for p in files if is_image(p)]
        skipped += len(files) - len(images)
        if not images:
            raise UserError(f"class folder {folder} holds no images; add images or remove the folder "
                            f"(from every split)")
        paths += images
        labels += [label] * len(images)
    if skipped:
        warnings.warn(f"skipped {skipped} non-image file(s) in {root} "
                      f"(images end in {', '.join(IMAGE_EXTENSIONS)})", stacklevel=2)
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


# ---------------------------------------------------------------- decode

def decode_image(path: Path, height: int, width: int) -> np.ndarray:
    """Decode any image (grayscale, RGBA, palette, 16-bit, any size) to uint8 RGB (H, W, 3)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({e}); remove or replace the file") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as torchvision's loader makes it, except 16-bit and float images, scaled to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


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
    try_write(path, lambda tmp: torch.save({"fingerprint": key, "images": images}, tmp))
    return images


def try_write(path: Path, write):
    """Write through a temporary file; a read-only dataset folder only costs the cache."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write the cache {path} ({e}); images will be decoded again next time")


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
    """One split ready for batching: decoded in memory (`images`) or `streamed`."""
    split: Split
    labels: torch.Tensor
    images: torch.Tensor = None
    streamed: StreamedImages = None

    def __len__(self):
        return len(self.labels)


def load_images(split: Split, height: int, width: int, device, cache_gb: float = 4.0,
                workers: int = 2, progress=True) -> ImageSet:
    """Hold the split in (device) memory when it fits under cache_gb, else stream it."""
    size_gb = len(split.paths) * 3 * height * width / 2 ** 30
    labels = split.labels.to(device)
    if size_gb > cache_gb:
        print(f"{split.name}: {size_gb:.1f} GB decoded exceeds --cache-gb {cache_gb:g}; streaming from disk")
        return ImageSet(split, labels, streamed=StreamedImages(split, height, width))
    images = cached_images(split, height, width, workers, progress)
    return ImageSet(split, labels, images=images.to(device))


def training_stats(image_set: ImageSet, height: int, width: int) -> tuple:
    """Per-channel mean and std of the training images in [0, 1], cached beside the dataset."""
    split = image_set.split
    key = fingerprint(split, height, width)
    path = cache_dir(split) / f"stats-{height}x{width}.json"
    try:
        stored = json.loads(path.read_text())
        if stored["fingerprint"] == key:
            return stored["mean"], stored["std"]
    except (OSError, ValueError, KeyError):
        pass
    if image_set.images is not None:
        chunks = image_set.images.split(1024)
    else:
        chunks = progress_bar((image_set.streamed[i][0][None] for i in range(len(image_set))),
                              total=len(image_set), desc="channel stats")
    mean, std = compute_channel_stats(chunks)
    try_write(path, lambda tmp: Path(tmp).write_text(
        json.dumps({"fingerprint": key, "mean": mean, "std": std}, indent=1)))
    return mean, std


def batches(image_set: ImageSet, order: torch.Tensor, batch_size: int, device, workers: int = 2):
    """Yield (uint8 images, labels) on the device, in the given index order."""
    chunks = order.split(batch_size)
    if image_set.images is not None:
        for chunk in chunks:
            chunk = chunk.to(image_set.images.device)
            yield image_set.images[chunk], image_set.labels[chunk]
        return
    loader = torch.utils.data.DataLoader(
        image_set.streamed, batch_sampler=[c.tolist() for c in chunks], num_workers=workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=False)
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


# ---------------------------------------------------------------- sample

def epoch_generator(seed: int, epoch: int, device="cpu") -> torch.Generator:
    """A generator seeded by (seed, epoch): an epoch's draws do not depend on the epochs before it,
    so a resumed run draws exactly what the uninterrupted run would have drawn."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


SAMPLERS = ("instance", "class", "sqrt", "progressive")


def class_probabilities(counts: torch.Tensor, sampler: str, epoch: int = 0, epochs: int = 1) -> torch.Tensor:
    """How often each class is drawn: in proportion to n_c (instance), uniformly (class), to
    sqrt(n_c) (sqrt), or moving linearly from instance to class over the epochs (progressive,
    Kang et al., ICLR 2020: p = (1 - t/T) p_instance + (t/T) p_class, reaching class at the last epoch)."""
    counts = counts.double()
    instance = counts / counts.sum()
    balanced = (counts > 0).double() / (counts > 0).sum()
    if sampler == "instance":
        return instance
    if sampler == "class":
        return balanced
    if sampler == "sqrt":
        return counts.sqrt() / counts.sqrt().sum()
    if sampler == "progressive":
        t = epoch / max(1, epochs - 1)
        return (1 - t) * instance + t * balanced
    raise ValueError(f"unknown sampler {sampler!r}")


def sampler_at(sampler: str, epoch: int, drs=None) -> str:
    """Deferred re-sampling (Cao et al. 2019): instance sampling until epoch `drs` (1-based), class after."""
    if drs is not None:
        return "class" if epoch + 1 >= drs else "instance"
    return sampler


def draws_per_image(labels: torch.Tensor, sampler: str, generator, epoch=0, epochs=1) -> torch.Tensor:
    """How many times each image is drawn this epoch (N draws in all, N = the number of images).

    Instance sampling draws every image once. The others draw each class's number of draws from
    its class probability (multinomial), then spread them over the class's images as evenly as
    possible: whole rounds over the class, the remainder without repetition."""
    num_images = len(labels)
    if sampler == "instance":
        return torch.ones(num_images, dtype=torch.long)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    probabilities = class_probabilities(counts, sampler, epoch, epochs)
    class_draws = torch.bincount(torch.multinomial(probabilities, num_images, replacement=True,
                                                   generator=generator), minlength=len(counts))
    draws = torch.zeros(num_images, dtype=torch.long)
    for c in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(labels == c).flatten()
        rounds, extra = divmod(int(class_draws[c]), len(members))
        draws[members] = rounds
        draws[members[torch.randperm(len(members), generator=generator)[:extra]]] += 1
    return draws


def epoch_order(labels: torch.Tensor, seed: int, epoch: int, sampler="instance", epochs=1, drs=None,
                rank=0, world=1) -> torch.Tensor:
    """The image indices this process trains on in one epoch, in order.

    Every process computes the same draws (seeded by seed and epoch) and takes its own share:
    whole images (with all their repeats) are dealt to the processes in a random order, most
    repeated first, back and forth (0, 1, 1, 0, 0, 1, ...) so the shares come out nearly equal; two
    processes never train on the same image in an epoch. The shares are then cut to the same
    length (a process per GPU must run the same number of steps), dropping at most a few draws."""
    generator = epoch_generator(seed, epoch)
    draws = draws_per_image(labels.cpu(), sampler_at(sampler, epoch, drs), generator, epoch, epochs)
    images = torch.nonzero(draws).flatten()
    images = images[torch.randperm(len(images), generator=generator)]
    images = images[torch.sort(draws[images], descending=True, stable=True).indices]
    position = torch.arange(len(images))
    back_and_forth = torch.where((position // world) % 2 == 0, position % world, world - 1 - position % world)
    shares = [images[back_and_forth == r] for r in range(world)]
    sizes = [int(draws[share].sum()) for share in shares]
    mine = shares[rank].repeat_interleave(draws[shares[rank]])
    mine = mine[torch.randperm(len(mine), generator=generator)]
    return mine[:min(sizes)]


def drop_single_last(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """BatchNorm cannot train on a batch of one image: leave such a last image out this epoch."""
    if len(order) > 1 and len(order) % batch_size == 1:
        return order[:-1]
    return order


# ---------------------------------------------------------------- augment and normalise

def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING):
    """Random crop with zero padding, then random horizontal flip, for a whole uint8 batch.

    The draws, in this order: vertical offsets, horizontal offsets (each in [0, 2*padding]),
    then flips (uniform < 0.5). Returns a channels_last uint8 tensor of the input's shape."""
    n, _, height, width = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    padded = F.pad(images, (padding,) * 4)
    rows = dy[:, None] + torch.arange(height, device=device)
    cols = dx[:, None] + torch.arange(width, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    picked = padded[torch.arange(n, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # (N, H, W, C) memory viewed as NCHW: channels_last


class Normalise(torch.nn.Module):
    """uint8 images -> float, normalised with the training set's per-channel mean and std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, images):
        return (images.float() - self.mean) / self.std
