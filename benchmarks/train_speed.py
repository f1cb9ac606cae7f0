"""Training and evaluation speed: the seed project's pipeline (a) against the toolkit's (b).

    python -m benchmarks.train_speed --model_index 35

(a) torchvision ImageFolder + per-image transforms + DataLoader(shuffle=True), fp32, NCHW,
    loss.item() and an accuracy .item() every batch (the seed project's way);
(b) the toolkit's defaults: data.load_images (decoded once, cached), batch augmentation,
    engine.Engine with --precision auto, channels_last and small-map convolutions as matmuls
    (engine.prepare_model; --library-convolutions leaves those out).
Same model, weights, data, batch size and number of steps on both sides; warm-up steps are not
timed. (b)'s FLOP/s is compared with this machine's matmul peak at (b)'s precision, measured in
the same run.
"""
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

import get_model
from toolkit import arguments, augment, cli, data, engine, plan, sampling, training

LR = 0.02
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
PEAK_MATMUL_SIZE = 2048
PEAK_MATMUL_REPEATS = 10
SEED_WORKERS = (os.cpu_count() or 1) // 4  # the seed project's 1_train.py: cpu_count() / 4


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.train_speed", description=(
        "Training and evaluation images/s of the seed project's pipeline (a) and the toolkit's (b)."))
    p.add_argument("--model_index", type=int, default=35, help="network (default: 35, SmallResNet18)")
    arguments.add_dataset(p, default="digits-lt", help="dataset folder in a_datasets/ (default: digits-lt)")
    arguments.add_batchsize(p)
    arguments.add_image_size(p)
    p.add_argument("--steps", type=cli.positive_int, default=20, help="timed training steps (default: 20)")
    p.add_argument("--warmup-steps", type=cli.non_negative_int, default=3,
                   help="untimed training steps before the timed ones (default: 3)")
    arguments.add_workers(p)
    p.add_argument("--seed-workers", type=cli.non_negative_int, default=SEED_WORKERS,
                   help=f"DataLoader worker processes of (a) (default: the seed project's rule, "
                        f"a quarter of the CPU cores: {SEED_WORKERS} here)")
    arguments.add_device(p)  # (a) runs in fp32, as the seed project did
    p.add_argument("--library-convolutions", action="store_true",
                   help="(b) with PyTorch's own convolution kernels everywhere, without the small-map "
                        "matmul path of toolkit/small_map_conv.py: measures what that path adds")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (b)'s model; the compile time is reported apart")
    p.add_argument("--repeats", type=cli.positive_int, default=1,
                   help="measure (a) and (b) this many times, taking turns, and keep each one's fastest "
                        "(default: 1; more on a machine shared with other jobs)")
    arguments.add_threads(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    arguments.add_roots(p, logs=False)
    return p.parse_args(argv)


# ---------------------------------------------------------------- shared pieces

def find_dataset(data_root: Path, name: str) -> Path:
    if name == "digits-lt" and not (Path(data_root) / name / "train").is_dir():
        raise cli.UserError(f"the demo dataset digits-lt is not in {data_root}; "
                            f"make it with: python 0_data_split.py --demo")
    return data.dataset_dir(data_root, name)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall-clock seconds of a block, the device's queued work included."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


def fresh_model(args, num_classes: int) -> torch.nn.Module:
    """The same initial weights on both sides."""
    torch.manual_seed(args.seed)
    return get_model.build_model(args.model_index, num_classes, args.height, args.width)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


# ---------------------------------------------------------------- (a) the seed project's pipeline

def image_folder(args, dataset: Path, mean, std, train: bool):
    augmentation = [transforms.RandomCrop((args.height, args.width), padding=augment.CROP_PADDING),
                    transforms.RandomHorizontalFlip()] if train else []
    pipeline = transforms.Compose([transforms.Resize((args.height, args.width)), *augmentation,
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    return torchvision.datasets.ImageFolder(str(dataset / "train"), transform=pipeline)


def cycled(data_loader):
    """Batches of epoch after epoch; each epoch starts a new iterator, as a training loop does."""
    while True:
        yield from data_loader


def seed_train_step(model, optimizer, loss_fn, images, labels, device) -> tuple:
    images, labels = images.to(device), labels.to(device)
    outputs = model(images)
    loss = loss_fn(outputs, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    correct = (outputs.argmax(1) == labels).sum().item()
    return loss.item(), correct


def seed_training(args, dataset, mean, std, num_classes, device):
    """(a) after its warm-up steps: a function that trains n more steps."""
    model = fresh_model(args, num_classes).to(device)
    model.train()
    optimizer, loss_fn = sgd(model), torch.nn.CrossEntropyLoss()
    data = torch.utils.data.DataLoader(image_folder(args, dataset, mean, std, train=True),
                                       batch_size=args.batchsize, shuffle=True,
                                       num_workers=args.seed_workers, drop_last=True)
    stream = cycled(data)

    def train_steps(steps: int):
        for images, labels in itertools.islice(stream, steps):
            seed_train_step(model, optimizer, loss_fn, images, labels, device)
    train_steps(args.warmup_steps)
    return train_steps


def seed_evaluation(args, dataset, mean, std, num_classes, device):
    """(a)'s evaluation, fp32, model.eval(), no_grad: a function that runs n passes over the split."""
    model = fresh_model(args, num_classes).to(device).eval()
    data = torch.utils.data.DataLoader(image_folder(args, dataset, mean, std, train=False),
                                       batch_size=args.batchsize, shuffle=False, num_workers=args.seed_workers)

    @torch.no_grad()
    def evaluate(passes: int):
        for _ in range(passes):
            correct = 0
            for images, labels in data:
                images, labels = images.to(device), labels.to(device)
                correct += (model(images).argmax(1) == labels).sum().item()
    evaluate(1)
    return evaluate


# ---------------------------------------------------------------- (b) the toolkit

def toolkit_setup(args, device) -> training.Setup:
    """(b) built exactly as 1_train.py builds it, from 1_train.py's own arguments."""
    train_args = plan.parse_args([
        "--dataset", args.dataset, "--data-root", str(args.data_root), "--model_index", str(args.model_index),
        "--height", str(args.height), "--width", str(args.width), "--batchsize", str(args.batchsize),
        "--lr", str(LR), "--lrstep", "1000000", "--momentum", str(MOMENTUM), "--weight-decay", str(WEIGHT_DECAY),
        "--workers", str(args.workers), "--device", str(device), "--precision", args.precision,
        "--seed", str(args.seed), "--no-progress", *(["--compile"] if args.compile else [])])
    torch.manual_seed(args.seed)  # the same initial weights as (a)'s fresh_model
    return training.build_setup(train_args, device=device, progress=False,
                                small_map_matmuls=not args.library_convolutions)


def full_batch_orders(labels, batch_size: int, steps: int, seed: int, first_epoch: int):
    """1_train.py's shuffled epochs (sampling.epoch_order) cut to whole batches, as many epochs as
    `steps` batches need."""
    per_epoch = len(labels) // batch_size
    epoch = first_epoch
    while steps > 0:
        take = min(per_epoch, steps)
        yield epoch, sampling.epoch_order(labels, seed, epoch)[:take * batch_size]
        steps -= take
        epoch += 1


def toolkit_training(setup, args):
    """(b) after its warm-up steps: a function that trains n more steps with Engine.train_epoch,
    epoch after epoch; and the warm-up's seconds (torch.compile's compilation included)."""
    next_epoch = 0
    run = setup.engine

    def train_steps(steps: int):
        nonlocal next_epoch
        for epoch, order in full_batch_orders(setup.train.labels, args.batchsize, steps, args.seed, next_epoch):
            generator = sampling.epoch_generator(args.seed, epoch, run.device)
            run.train_epoch(setup.train, order, args.batchsize, generator, epoch, epoch + 1, progress=False)
            next_epoch = epoch + 1
    with Timer(run.device) as warmup:
        train_steps(args.warmup_steps)
    return train_steps, warmup.seconds


def toolkit_evaluation(setup, args):
    unaugmented = dataclasses.replace(setup.train, augment=None)

    def evaluate(passes: int):
        for _ in range(passes):
            setup.engine.predict(unaugmented, args.batchsize, progress=False)
    evaluate(1)
    return evaluate


def fastest_rates(runs: dict, amount: int, images: int, repeats: int, device) -> dict:
    """Images/s of each run(amount), taking turns, the best of `repeats` turns each: on a machine
    shared with other jobs, the fastest turn is the one least slowed down by them."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            with Timer(device) as timer:
                run(amount)
            best[name] = max(best[name], images / timer.seconds)
    return best


# ---------------------------------------------------------------- FLOPs and peak

def flops_per_step(setup, batch_size) -> int:
    """Forward and backward FLOPs of one training batch, as (b) runs it (weights not updated)."""
    run = setup.engine
    x, labels = next(dataclasses.replace(setup.train, augment=None)(torch.arange(batch_size), batch_size))
    run.model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with engine.autocast(run.device, run.precision):
            logits = run.model(x)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
    run.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak(device, precision, size=PEAK_MATMUL_SIZE, repeats=PEAK_MATMUL_REPEATS) -> float:
    """FLOP/s of large square matmuls in (b)'s compute dtype (fp16 and bf16 as autocast runs them)."""
    dtype = precision.dtype or torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):  # the best of 5 rounds: other jobs on the machine only slow a round down
        a @ b
        with Timer(device) as timer:
            for _ in range(repeats):
                a @ b
        best = min(best, timer.seconds)
    return 2 * size ** 3 * repeats / best


# ---------------------------------------------------------------- report

def load_average() -> str:
    """The machine's 1-minute load: other jobs on a shared machine skew the timings."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def print_report(rows, flops_per_image, peak, precision, train_ips_b):
    print(f"{'':<24}{'(a) seed':>12}{'(b) toolkit':>14}{'(b)/(a)':>10}")
    for name, a, b in rows:
        print(f"{name:<24}{a:>12.1f}{b:>14.1f}{b / a:>9.2f}x")
    achieved = flops_per_image * train_ips_b
    print(f"(b) training FLOPs per image (forward+backward): {flops_per_image / 1e9:.3f} GFLOP; achieved "
          f"{achieved / 1e12:.3f} TFLOP/s = {100 * achieved / peak:.1f}% of the {precision.name} matmul peak "
          f"{peak / 1e12:.2f} TFLOP/s")
    (_, a_train, b_train), (_, a_eval, b_eval) = rows
    print(f"train speed-up (b)/(a): {b_train / a_train:.2f}x")
    print(f"eval speed-up (b)/(a): {b_eval / a_eval:.2f}x")


def benchmark(argv=None) -> int:
    args = parse_args(argv)
    engine.use_threads(args.threads)
    device = engine.pick_device(args.device)
    precision = engine.pick_precision(args.precision, device)
    dataset = find_dataset(args.data_root, args.dataset)
    split = data.scan_split(dataset, "train")
    if len(split.paths) < args.batchsize:
        raise cli.UserError(f"{dataset.name} has {len(split.paths)} training images, fewer than "
                            f"--batchsize {args.batchsize}; pass a smaller --batchsize")
    setup = toolkit_setup(args, device)
    mean, std = setup.record.mean, setup.record.std
    num_classes = len(split.class_names)
    eval_passes = max(1, round(args.steps * args.batchsize / len(split.paths)))
    print(f"{get_model.model_name(args.model_index)} on {dataset.name} ({len(split.paths)} training images, "
          f"{args.height}x{args.width}), batch {args.batchsize}: {args.steps} timed training steps after "
          f"{args.warmup_steps} warm-up steps, {eval_passes} evaluation passes, best of {args.repeats}")
    print(f"device {device}, {torch.get_num_threads()} threads, (a) {args.seed_workers} DataLoader workers, "
          f"(b) precision {precision.name}"
          f"{', compiled' if args.compile else ''}"
          f"{', library convolutions only' if args.library_convolutions else ''}; load average {load_average()}")

    toolkit_train, warmup_s = toolkit_training(setup, args)
    train = fastest_rates({"a": seed_training(args, dataset, mean, std, num_classes, device), "b": toolkit_train},
                          args.steps, args.steps * args.batchsize, args.repeats, device)
    evaluation = fastest_rates({"a": seed_evaluation(args, dataset, mean, std, num_classes, device),
                                "b": toolkit_evaluation(setup, args)},
                               eval_passes, eval_passes * len(split.paths), args.repeats, device)
    flops_per_image = flops_per_step(setup, args.batchsize) / args.batchsize
    peak = matmul_peak(device, precision)

    print(f"load average at the end: {load_average()}")
    if args.compile:
        print(f"(b) warm-up ({args.warmup_steps} steps, compilation included): {warmup_s:.1f} s")
    print_report([("training images/s", train["a"], train["b"]),
                  ("evaluation images/s", evaluation["a"], evaluation["b"])],
                 flops_per_image, peak, precision, train["b"])
    return 0


def main(argv=None) -> int:
    return cli.run_main(benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
