"""What every script shares: UserError, common argument types and paths, the main() wrapper."""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
DATA_ROOT = REPO / "a_datasets"
SOURCE_ROOT = REPO / "c_original_dataset"
LOGS_ROOT = REPO / "logs"

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake in the user's data or arguments: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage and calling sys.exit."""

    def error(self, message):
        raise UserError(f"{message} (see: python {self.prog} --help)")


def run_main(body, argv=None) -> int:
    """Run a script's body; a UserError becomes `error: ...` on stderr and exit code 2."""
    try:
        return body(argv) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_root_arguments(parser: argparse.ArgumentParser, data=True, logs=True):
    """Where datasets and runs live; defaults are the folders beside the scripts."""
    if data:
        parser.add_argument("--data-root", type=Path, default=DATA_ROOT,
                            help="folder holding the split datasets (default: a_datasets/)")
    if logs:
        parser.add_argument("--logs-root", type=Path, default=LOGS_ROOT,
                            help="folder holding the run directories (default: logs/)")


def progress_bar(iterable, enabled=True, **options):
    """A tqdm bar on stdout, shown only when asked for and stdout is a terminal (not in logs)."""
    from tqdm import tqdm
    return tqdm(iterable, disable=None if enabled else True, file=sys.stdout, leave=False, **options)
