"""Image files: which files are images, the class folders that hold them, and decoding to RGB.

The one place that walks an image folder: splitting the originals, scanning a dataset's splits
and finding new images to predict all list images through `images_in`.
"""
import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from toolkit.cli import UserError, progress_bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_hidden(path: Path, below: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(below).parts)


def class_folders(folder: Path) -> list:
    """The visible sub-folders of `folder`, sorted: one per class."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def images_in(folder: Path) -> tuple:
    """(sorted image paths at any depth below `folder`, how many other visible files it holds);
    hidden files and folders (.cache, .DS_Store, .ipynb_checkpoints) are passed over."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not is_hidden(p, folder))
    images = [p for p in files if is_image(p)]
    return images, len(files) - len(images)


def warn_skipped(count: int, folder: Path):
    if count:
        warnings.warn(f"skipped {count} non-image file(s) in {folder} "
                      f"(images end in {', '.join(IMAGE_EXTENSIONS)})", stacklevel=3)


def decode_image(path: Path, height: int, width: int) -> np.ndarray:
    """Decode any image (grayscale, RGBA, palette, 16-bit, any size) to uint8 RGB (H, W, 3)."""
    try:
        rgb = decoded_rgb(path)
    except Image.DecompressionBombError as e:
        raise UserError(f"cannot read image {path} ({e}); downscale it below that size") from None
    except UNREADABLE as e:
        raise UserError(f"cannot read image {path} ({e}); remove or replace the file") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError)  # what PIL raises for a broken file


def decoded_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def why_unreadable(path: Path) -> str | None:
    """None when the whole image decodes, else what is wrong with it."""
    try:
        decoded_rgb(path)
    except Image.DecompressionBombError as e:
        return f"too large to decode safely ({e})"
    except UNREADABLE as e:
        return str(e) or type(e).__name__
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as torchvision's loader makes it, except 16-bit and float images, scaled to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


# ---------------------------------------------------------------- content: the same image under any name

def content_hash(path: Path) -> str | None:
    """The SHA-256 of a file's bytes; None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def hashes_of(paths: list, workers: int = 2, progress=True, desc="hash") -> list:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(progress_bar(pool.map(content_hash, paths), progress, total=len(paths), desc=desc, unit="img"))
