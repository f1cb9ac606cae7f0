"""Seconds per training epoch at real image sizes, as 1_train.py measures them (train.csv's seconds).

    python 0_data_split.py --demo-labels            # once: 1485 training images (any dataset will do)
    python -m benchmarks.epoch_time                 # ResNet20 and resnet18 at 64, 128, 224 px, 1 thread and the default
    python -m benchmarks.epoch_time --dataset defects --sizes 128 224 --models 9

Each combination is one `1_train.py --epochs 2` in a process of its own (so --threads applies to
it alone), into a temporary logs folder; the figure is epoch 2's seconds (epoch 1 also decodes the
images into the cache), training and validation together, and the same per 1000 training images,
which carries over to a dataset of another size. Run it on a quiet machine: other work on the cores
makes every figure wrong.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

import get_model
from toolkit import arguments, cli, data

MODELS = [41, 9]  # ResNet20 (ours, for small images), torchvision's resnet18
SIZES = [64, 128, 224]
THREADS = ["1", "default"]
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.epoch_time", description=(
        "Seconds per training epoch of 1_train.py for models x image sizes x threads."))
    arguments.add_dataset(p, default="digits-labels", help="dataset folder in a_datasets/ (default: digits-labels)")
    p.add_argument("--models", type=int, nargs="+", default=MODELS, help="model indices (default: 41 9)")
    p.add_argument("--sizes", type=cli.positive_int, nargs="+", default=SIZES, help="image sizes (default: 64 128 224)")
    p.add_argument("--threads", nargs="+", default=THREADS, help="thread counts; 'default' leaves it to PyTorch "
                                                                 "(default: 1 default)")
    arguments.add_batchsize(p)
    arguments.add_roots(p, logs=False)
    return p.parse_args(argv)


def epoch_seconds(args, model: int, size: int, threads: str, logs: Path) -> float:
    """Epoch 2's seconds of a 2-epoch run (a fresh process)."""
    command = [sys.executable, str(ROOT / "1_train.py"), "--model_index", str(model), "--dataset", args.dataset,
               "--data-root", str(args.data_root), "--logs-root", str(logs), "--height", str(size), "--width",
               str(size), "--epochs", "2", "--lrstep", "100", "--batchsize", str(args.batchsize), "--no-progress"]
    command += [] if threads == "default" else ["--threads", threads]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    (train_log,) = list(logs.rglob("train.csv"))
    return float(pd.read_csv(train_log)["seconds"].iloc[-1])


def measure(argv=None):
    args = parse_args(argv)
    images = len(data.scan_split(data.dataset_dir(args.data_root, args.dataset), "train").paths)
    rows = []
    for model in args.models:
        for size in args.sizes:
            for threads in args.threads:
                with tempfile.TemporaryDirectory() as logs:
                    seconds = epoch_seconds(args, model, size, threads, Path(logs))
                rows.append({"model": f"{get_model.model_name(model)} ({model})", "size": size, "threads": threads,
                             "s/epoch": round(seconds, 1),
                             "s per 1000 images": round(1000 * seconds / images, 1)})
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    print(f"\n{args.dataset}: {images} training images, batch {args.batchsize}; epoch 2 of 2, training and validation")
    print(markdown(pd.DataFrame(rows)))
    return 0


def markdown(table: pd.DataFrame) -> str:
    """The table as the README's markdown (pandas' to_markdown needs tabulate, not a dependency)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)])


def main(argv=None) -> int:
    return cli.run_main(measure, argv)


if __name__ == "__main__":
    sys.exit(main())
