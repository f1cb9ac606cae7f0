"""Augmentation speed at real image sizes: torchvision's per-image transforms (a) against the
toolkit's batched path (b), the augmentation alone and a training step, in one run.

    python -m benchmarks.augment_speed                 # 224 px JPEGs made in a temporary folder

(a) what a user of the seed project or of timm writes: ImageFolder over the JPEGs, per-image
    transforms RandomResizedCrop(224) + RandomHorizontalFlip() + RandAugment(2, 9) on PIL images,
    ToTensor, Normalize, in a DataLoader(shuffle=True) with worker processes; the training step in
    fp32, NCHW, loss.item() every batch. Every epoch decodes every JPEG again.
(b) 1_train.py's path with --augment randaugment: the JPEGs decoded once into the training cache
    (at 8/7 of the size: 256 for 224; the one-time cost is printed apart), then every batch
    gathered, crop-resized and flipped in one grid_sample, RandAugmented in sub-batches, normalised
    on the device; the training step through engine.Engine at --precision auto, channels_last.
Same images, model, initial weights, batch size and number of steps on both sides; warm-up steps
are not timed; with --repeats the two take turns and each keeps its fastest turn.
"""
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

import get_model
from benchmarks.train_speed import (
    LR,
    MOMENTUM,
    WEIGHT_DECAY,
    Timer,
    cycled,
    fastest_rates,
    load_average,
    seed_train_step,
    sgd,
    toolkit_training,
)
from toolkit import arguments, augment, cli, engine, plan, sampling, training

CLASSES = 4


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.augment_speed", description=(
        "Images/s of torchvision's per-image augmentation in a DataLoader (a) and the toolkit's batched "
        "augmentation (b), alone and with a training step, on JPEGs made at run time."))
    p.add_argument("--model_index", type=int, default=9, help="network (default: 9, torchvision's resnet18)")
    p.add_argument("--size", type=cli.positive_int, default=224, help="JPEG and training size in pixels (default: 224)")
    p.add_argument("--images", type=cli.positive_int, default=256, help="training JPEGs to make (default: 256)")
    arguments.add_batchsize(p, default=32)
    p.add_argument("--steps", type=cli.positive_int, default=4, help="timed training steps (default: 4)")
    p.add_argument("--warmup-steps", type=cli.non_negative_int, default=1,
                   help="untimed training steps before the timed ones (default: 1)")
    p.add_argument("--loader-workers", type=cli.non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader worker processes of (a) (default: the CPU cores, at most 4)")
    p.add_argument("--randaugment-n", type=cli.non_negative_int, default=augment.RANDAUGMENT_N,
                   help="RandAugment operations (default: %(default)s)")
    p.add_argument("--randaugment-m", type=augment.magnitude_bin, default=augment.RANDAUGMENT_M,
                   help="RandAugment magnitude (default: %(default)s)")
    arguments.add_device(p)  # (a) trains in fp32, as its users do
    p.add_argument("--repeats", type=cli.positive_int, default=1,
                   help="measure (a) and (b) this many times, taking turns, and keep each one's fastest (default: 1)")
    arguments.add_threads(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="make the JPEGs in DIR and keep them (default: a temporary folder, removed at the end)")
    return p.parse_args(argv)


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# ---------------------------------------------------------------- the JPEGs

def make_jpegs(root: Path, count: int, size: int, seed: int) -> Path:
    """A dataset folder of `count` training and a few validation JPEGs of size x size: smooth colour
    fields with a bright disc whose place depends on the class, so decoding costs what a photo's does."""
    rng = np.random.default_rng(seed)
    dataset = root / "jpegs"
    grid = np.stack(np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size)), -1)
    for split, number in (("train", count), ("valid", max(CLASSES, count // 8))):
        for i in range(number):
            label = i % CLASSES
            folder = dataset / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * grid[..., :1]) + rng.normal(0, 25, (size, size, 3))
            centre = np.array([0.25 + 0.5 * (label % 2), 0.25 + 0.5 * (label // 2)]) + rng.normal(0, 0.05, 2)
            disc = ((grid - centre) ** 2).sum(-1) < 0.02
            base[disc] = 240
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"img{i:04d}.jpg", quality=90)
    return dataset


# ---------------------------------------------------------------- (a) per-image transforms in a DataLoader

def per_image_loader(args, dataset: Path, mean, std) -> torch.utils.data.DataLoader:
    pipeline = transforms.Compose([
        transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(),
        transforms.RandAugment(num_ops=args.randaugment_n, magnitude=args.randaugment_m),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    folder = torchvision.datasets.ImageFolder(str(dataset / "train"), transform=pipeline)
    return torch.utils.data.DataLoader(folder, batch_size=args.batchsize, shuffle=True, drop_last=True,
                                       num_workers=args.loader_workers,
                                       persistent_workers=args.loader_workers > 0)


def per_image_augmentation(loader):
    """(a) alone: a function that draws n batches from the loader."""
    stream = cycled(loader)

    def draw(batches: int):
        for _ in itertools.islice(stream, batches):
            pass
    draw(1)
    return draw


def per_image_training(args, loader, device):
    """(a) with its training step: a function that trains n more steps."""
    torch.manual_seed(args.seed)
    model = get_model.build_model(args.model_index, CLASSES, args.size, args.size).to(device).train()
    optimizer, loss_fn, stream = sgd(model), torch.nn.CrossEntropyLoss(), cycled(loader)

    def train_steps(steps: int):
        for images, labels in itertools.islice(stream, steps):
            seed_train_step(model, optimizer, loss_fn, images, labels, device)
    train_steps(args.warmup_steps)
    return train_steps


# ---------------------------------------------------------------- (b) the toolkit

def toolkit_setup(args, data_root: Path, device):
    """(b) built exactly as 1_train.py builds it, from 1_train.py's own arguments."""
    train_args = plan.parse_args([
        "--dataset", "jpegs", "--data-root", str(data_root), "--model_index", str(args.model_index),
        "--height", str(args.size), "--width", str(args.size), "--batchsize", str(args.batchsize),
        "--lr", str(LR), "--lrstep", "1000000", "--momentum", str(MOMENTUM), "--weight-decay", str(WEIGHT_DECAY),
        "--augment", "randaugment", "--randaugment-n", str(args.randaugment_n),
        "--randaugment-m", str(args.randaugment_m), "--device", str(device), "--precision", args.precision,
        "--seed", str(args.seed), "--no-progress"])
    torch.manual_seed(args.seed)  # the same initial weights as (a)'s
    return training.build_setup(train_args, device=device, progress=False)


def batched_augmentation(setup, args):
    """(b) alone: a function that makes n finished (augmented, normalised) batches."""
    labels, epochs = setup.train.labels.cpu(), itertools.count()
    per_epoch = len(labels) // args.batchsize

    def draw(batches: int):
        while batches > 0:
            epoch, take = next(epochs), min(batches, per_epoch)
            order = sampling.epoch_order(labels, args.seed, epoch)[:take * args.batchsize]
            generator = sampling.epoch_generator(args.seed, epoch, setup.engine.device)
            for _ in setup.train(order, args.batchsize, generator):
                pass
            batches -= take
    draw(1)
    return draw


# ---------------------------------------------------------------- the run

def benchmark(argv=None) -> int:
    args = parse_args(argv)
    engine.use_threads(args.threads)
    device = engine.pick_device(args.device)
    precision = engine.pick_precision(args.precision, device)
    if args.images < args.batchsize:
        raise cli.UserError(f"--images {args.images} is fewer than --batchsize {args.batchsize}")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="augment_speed-"))
    try:
        dataset = make_jpegs(root, args.images, args.size, args.seed)
        print(f"{get_model.model_name(args.model_index)} on {args.images} JPEGs of {args.size}x{args.size} "
              f"({CLASSES} classes) in {dataset}, batch {args.batchsize}; RandAugment n{args.randaugment_n} "
              f"m{args.randaugment_m}; best of {args.repeats}")
        print(f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; device {device}; "
              f"(a) fp32, {args.loader_workers} DataLoader workers; (b) precision {precision.name}; "
              f"load average {load_average()}")
        with Timer(device) as decode:
            setup = toolkit_setup(args, root, device)
        cached = tuple(setup.train.image_set.size)
        print(f"(b) once: decode and cache the training JPEGs at {cached[0]}x{cached[1]} "
              f"(8/7 of {args.size}): {decode.seconds:.1f} s")
        loader = per_image_loader(args, dataset, setup.record.mean, setup.record.std)
        batches = max(1, args.images // args.batchsize)
        alone = fastest_rates({"a": per_image_augmentation(loader), "b": batched_augmentation(setup, args)},
                              batches, batches * args.batchsize, args.repeats, device)
        toolkit_train, _ = toolkit_training(setup, args)
        train = fastest_rates({"a": per_image_training(args, loader, device), "b": toolkit_train},
                              args.steps, args.steps * args.batchsize, args.repeats, device)
        print(f"load average at the end: {load_average()}")
        print(f"{'images/s':<34}{'(a) per-image':>15}{'(b) batched':>13}{'(b)/(a)':>10}")
        for name, rates in ((f"augmentation alone ({batches} batches)", alone),
                            (f"training step ({args.steps} steps)", train)):
            print(f"{name:<34}{rates['a']:>15.1f}{rates['b']:>13.1f}{rates['b'] / rates['a']:>9.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    return cli.run_main(benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
