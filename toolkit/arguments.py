"""The command-line arguments several scripts share, each defined once."""
import argparse
from pathlib import Path

from toolkit.cli import (
    DATA_ROOT,
    LOGS_ROOT,
    dataset_name,
    non_negative_float,
    non_negative_int,
    positive_int,
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def add_roots(parser: argparse.ArgumentParser, data=True, logs=True):
    """Where datasets and runs live; defaults are the folders beside the scripts."""
    if data:
        parser.add_argument("--data-root", type=Path, default=DATA_ROOT,
                            help="folder holding the split datasets (default: a_datasets/)")
    if logs:
        parser.add_argument("--logs-root", type=Path, default=LOGS_ROOT,
                            help="folder holding the run directories (default: logs/)")


def add_device(parser: argparse.ArgumentParser, precision="auto"):
    """--device and --precision; `precision` is the default."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    meaning = ("auto: bf16 on CPUs and GPUs that run it natively, fp16 on older GPUs, else fp32"
               if precision == "auto" else "fp32: the same numbers on every machine; auto: as in 1_train.py")
    parser.add_argument("--precision", choices=PRECISIONS, default=precision, help=f"{meaning} (default: {precision})")


def add_threads(parser: argparse.ArgumentParser):
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of PyTorch (default: PyTorch's choice, one per core); on a machine "
                             "busy with other work, fewer threads are often much faster")


def add_dataset(parser: argparse.ArgumentParser, where="a_datasets/", **options):
    """--dataset NAME: a folder name, never a path (refused: separators, `.`, `..`)."""
    parser.add_argument("--dataset", type=dataset_name, metavar=options.pop("metavar", "NAME"),
                        help=options.pop("help", f"dataset folder name in {where}"), **options)


def add_batchsize(parser: argparse.ArgumentParser, default=128):
    parser.add_argument("--batchsize", type=positive_int, default=default, help=f"batch size (default: {default})")


def add_image_size(parser: argparse.ArgumentParser):
    parser.add_argument("--height", type=positive_int, default=32, help="image height (default: 32)")
    parser.add_argument("--width", type=positive_int, default=32, help="image width (default: 32)")


def add_workers(parser: argparse.ArgumentParser, at_least_one=False):
    parser.add_argument("--workers", type=positive_int if at_least_one else non_negative_int, default=2,
                        help="threads/processes decoding images (default: 2)")


def add_cache(parser: argparse.ArgumentParser):
    parser.add_argument("--cache-gb", type=non_negative_float, default=4.0,
                        help="hold decoded splits in memory up to this size, else stream from disk; 0: always "
                             "stream (default: 4)")


def add_progress(parser: argparse.ArgumentParser):
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
