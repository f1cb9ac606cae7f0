"""The fast path: the decoded-image cache, batch augmentation, fp32 equivalence, precision choice."""
import dataclasses
import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY_CLASSES, write_images
from PIL import Image
from torchvision import transforms

import get_model
from toolkit import augment, data, engine, images, plan, training
from toolkit.cli import UserError

HEIGHT, WIDTH = 12, 16


# ---------------------------------------------------------------- the cache

def pixels(seed, size=(WIDTH, HEIGHT), channels=3):
    """Random uint8 pixels (height, width[, channels]) for an image of PIL size (width, height)."""
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_mode_images(folder):
    """One image per mode; returns {file name: the RGB pixels PIL gives for it, when known independently}."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = pixels(0)
    Image.fromarray(rgb, "RGB").save(folder / "a_rgb.png")
    grey = pixels(1, channels=1)
    Image.fromarray(grey, "L").save(folder / "b_grey.png")
    rgba = pixels(2, channels=4)
    Image.fromarray(rgba, "RGBA").save(folder / "c_rgba.png")
    palette = Image.fromarray(pixels(3), "RGB").quantize(colors=16)
    palette.save(folder / "d_palette.png")
    colours = np.array(palette.getpalette(), dtype=np.uint8).reshape(-1, 3)
    sixteen = pixels(4, channels=1)
    Image.fromarray(sixteen.astype(np.uint16) * 257).save(folder / "e_16bit.png")  # I;16, full range
    Image.fromarray(pixels(5, size=(9, 20)), "RGB").save(folder / "f_non_square.png")
    Image.fromarray(pixels(6, size=(64, 48)), "RGB").save(folder / "g_large.png")
    return {"a_rgb.png": rgb, "b_grey.png": np.repeat(grey[:, :, None], 3, axis=2),
            "c_rgba.png": rgba[:, :, :3], "d_palette.png": colours[np.array(palette)],
            "e_16bit.png": np.repeat(sixteen[:, :, None], 3, axis=2)}


def expected_by_pil(path):
    return np.array(images.to_rgb(Image.open(path)).resize((WIDTH, HEIGHT), Image.BILINEAR))


def as_hwc(images, index):
    return images[index].permute(1, 2, 0).numpy()


@pytest.fixture
def mode_split(tmp_path):
    simple = write_mode_images(tmp_path / "ds" / "train" / "only")
    return data.scan_split(tmp_path / "ds", "train"), simple


def test_cache_holds_exactly_the_pixels_pil_decodes(mode_split):
    split, simple = mode_split
    assert Image.open(split.paths[4]).mode == "I;16"
    images = data.cached_images(split, HEIGHT, WIDTH, workers=2, progress=False)
    assert images.shape == (7, 3, HEIGHT, WIDTH) and images.dtype == torch.uint8
    for index, path in enumerate(split.paths):
        np.testing.assert_array_equal(as_hwc(images, index), expected_by_pil(path), err_msg=path.name)
        if path.name in simple:
            np.testing.assert_array_equal(as_hwc(images, index), simple[path.name], err_msg=path.name)
    for index in 0, 1, 2, 3:  # the simple modes as torchvision's loader sees them
        np.testing.assert_array_equal(as_hwc(images, index), np.array(Image.open(split.paths[index]).convert("RGB")))
    assert not np.array_equal(as_hwc(images, 5), as_hwc(images, 6))


def test_second_call_reads_the_cache_file(mode_split, monkeypatch):
    split, _ = mode_split
    first = data.cached_images(split, HEIGHT, WIDTH, progress=False)
    assert (data.cache_dir(split) / f"train-{HEIGHT}x{WIDTH}.pt").is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is current")
    monkeypatch.setattr(data, "decode_split", no_decoding)
    assert torch.equal(data.cached_images(split, HEIGHT, WIDTH, progress=False), first)


@pytest.fixture
def counted_decoding(monkeypatch):
    """Counts decode_split calls, still decoding."""
    calls = []
    original = data.decode_split

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(data, "decode_split", counting)
    return calls


def rewrite(path, array):
    before = path.stat().st_mtime_ns
    Image.fromarray(array, "RGB").save(path)
    # a rewrite within the filesystem's timestamp granularity could keep the mtime: move it on
    os.utime(path, ns=(before + 10 ** 9, before + 10 ** 9))


def test_a_changed_added_or_removed_image_invalidates_the_cache(tmp_path, counted_decoding):
    folder = tmp_path / "ds" / "train" / "only"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(pixels(10 + i), "RGB").save(folder / f"img{i}.png")

    def load():
        return data.cached_images(data.scan_split(tmp_path / "ds", "train"), HEIGHT, WIDTH, progress=False)

    load()
    assert load().shape[0] == 3 and len(counted_decoding) == 1

    new_pixels = pixels(99)
    rewrite(folder / "img1.png", new_pixels)
    changed = load()
    assert len(counted_decoding) == 2
    np.testing.assert_array_equal(as_hwc(changed, 1), new_pixels)

    Image.fromarray(pixels(20), "RGB").save(folder / "img3.png")
    added = load()
    assert len(counted_decoding) == 3 and added.shape[0] == 4
    np.testing.assert_array_equal(as_hwc(added, 3), pixels(20))

    (folder / "img0.png").unlink()
    removed = load()
    assert len(counted_decoding) == 4 and removed.shape[0] == 3
    np.testing.assert_array_equal(as_hwc(removed, 0), new_pixels)


# ---------------------------------------------------------------- batch augmentation

def reference_crop_flip(images, seed, padding=augment.CROP_PADDING):
    """One image at a time: pad with zeros, crop at the drawn offsets, flip when drawn.
    The draws in random_crop_flip's documented order: all dy, then all dx, then all flips."""
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = []
    for i, image in enumerate(images.numpy()):
        padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
        crop = padded[:, dy[i]:dy[i] + height, dx[i]:dx[i] + width]
        out.append(crop[:, :, ::-1] if flip[i] else crop)
    return torch.from_numpy(np.stack(out)), dy, dx, flip


def test_batch_crop_flip_equals_the_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 10, 14), dtype=torch.uint8)  # not square: rows and columns differ
    out = augment.random_crop_flip(images, torch.Generator().manual_seed(7))
    expected, _, _, flip = reference_crop_flip(images, 7)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert 0 < flip.sum() < len(flip)
    assert torch.equal(out, expected)


def position_image(height, width):
    """Channel 0 holds row + 1, channel 1 column + 1: a crop tells its offsets, padding shows as 0."""
    rows = torch.arange(1, height + 1).view(height, 1).expand(height, width)
    cols = torch.arange(1, width + 1).view(1, width).expand(height, width)
    return torch.stack([rows, cols, torch.ones(height, width, dtype=torch.long)]).to(torch.uint8)


def read_offsets(crop, padding=augment.CROP_PADDING):
    """(dy, dx, flipped) of one crop of a position_image, read from its pixels alone."""
    rows, cols = crop[0].long(), crop[1].long()
    middle_row, middle_col = crop.shape[1] // 2, crop.shape[2] // 2  # inside the image at any offset
    y = int((rows[:, middle_col] > 0).nonzero()[0])
    dy = int(rows[y, middle_col]) - 1 - y + padding
    line = cols[middle_row]
    inside = line.nonzero().flatten()
    flipped = bool(inside.numel() > 1 and line[inside[1]] < line[inside[0]])
    if flipped:
        line = line.flip(0)
        inside = line.nonzero().flatten()
    x = int(inside[0])
    dx = int(line[x]) - 1 - x + padding
    return dy, dx, flipped


def test_every_offset_and_both_flips_occur_and_match_the_draws():
    n = 500
    images = position_image(10, 12).expand(n, -1, -1, -1).contiguous()
    out = augment.random_crop_flip(images, torch.Generator().manual_seed(3))
    _, dy, dx, flip = reference_crop_flip(images, 3)
    seen = [read_offsets(crop) for crop in out]
    assert [s[0] for s in seen] == dy.tolist()
    assert [s[1] for s in seen] == dx.tolist()
    assert [s[2] for s in seen] == flip.tolist()
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(2 * augment.CROP_PADDING + 1))
    assert set(flip.tolist()) == {True, False}


# ---------------------------------------------------------------- fp32: the pre-cache pipeline's loss

@pytest.fixture
def colour_dataset(tmp_path):
    for split in ("train", "valid"):
        for seed, (name, colour) in enumerate(TINY_CLASSES.items()):
            write_images(tmp_path / "ds" / split / name, 6, colour, seed)
    return tmp_path / "ds"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fp32_reproduces_the_image_folder_pipeline_loss(colour_dataset, mode):
    size, batch = 16, 12
    args = plan.parse_args(["--dataset", "ds", "--data-root", str(colour_dataset.parent),
                                         "--model_index", "41", "--height", str(size), "--width", str(size),
                                         "--precision", "fp32", "--device", "cpu", "--no-progress"])
    torch.manual_seed(0)
    seed_model = get_model.build_model(41, len(TINY_CLASSES), size, size).train(mode == "train")
    torch.manual_seed(0)
    setup = training.build_setup(args, progress=False)  # as 1_train.py builds it: the same initial weights
    mean, std = setup.record.mean, setup.record.std

    folder = torchvision.datasets.ImageFolder(str(colour_dataset / "train"), transform=transforms.Compose([
        transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(mean, std)]))
    seed_images, seed_labels = next(iter(torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=False)))
    seed_loss = torch.nn.functional.cross_entropy(seed_model(seed_images), seed_labels)

    run = setup.engine
    run.model.train(mode == "train")
    unaugmented = dataclasses.replace(setup.train, augment=None)
    inputs, labels = next(unaugmented(torch.arange(batch), batch))
    with engine.autocast(run.device, run.precision):
        logits = run.forward(inputs)
    loss = run.criterion(logits, labels)

    assert torch.equal(labels, seed_labels) and len(set(seed_labels.tolist())) > 1
    assert logits.dtype == torch.float32 and inputs.is_contiguous(memory_format=torch.channels_last)
    assert abs(loss.item() - seed_loss.item()) < 1e-5


# ---------------------------------------------------------------- precision choice

def test_explicit_precisions_are_honoured_on_cpu():
    cpu = torch.device("cpu")
    assert engine.pick_precision("fp32", cpu).dtype is None
    assert engine.pick_precision("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16"):
        engine.pick_precision("fp16", cpu)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_is_bf16_exactly_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    chosen = engine.pick_precision("auto", torch.device("cpu"))
    assert chosen.name == ("bf16" if native else "fp32")
    assert not chosen.needs_scaler
