"""What every script shares: UserError, the main() wrapper, stop signals, argument types, paths."""
import argparse
import math
import os
import signal
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO / "a_datasets"
SOURCE_ROOT = REPO / "c_original_dataset"
LOGS_ROOT = REPO / "logs"

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports it


class UserError(Exception):
    """A mistake in the user's data or arguments: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage and calling sys.exit, and takes
    no abbreviated options (so that `given_options` can see what was typed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see: python {self.prog} --help)")


def given_options(parser: argparse.ArgumentParser, argv) -> set:
    """The destinations of the options typed on the command line (not left to their defaults)."""
    typed = {token.split("=", 1)[0] for token in (sys.argv[1:] if argv is None else argv)}
    return {action.dest for action in parser._actions if typed.intersection(action.option_strings)}


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f"warning: {message}\n"


def run_main(body, argv=None) -> int:
    """Run a script's body; a UserError becomes `error: ...` on stderr and exit code 2, a second
    Ctrl-C `interrupted` and exit code 130; warnings print as one line `warning: ...`."""
    formatter, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        code = body(argv) or 0
        sys.stdout.flush()  # a reader that has gone shows here, not at the interpreter's exit
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet too
        return EXIT_BROKEN_PIPE
    finally:
        warnings.formatwarning = formatter


class StopSignals:
    """Within `with StopSignals() as stop:`, Ctrl-C (SIGINT) or SIGTERM only sets stop.requested(),
    so long work can stop at a safe point; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: 128 + signal.SIGTERM}

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for signum in self.EXIT_CODES:
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after the current step "
              f"(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.received, 0)


def number(text: str) -> float:
    """A finite float: inf and nan are mistakes in every argument that takes a number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def checked(convert, accept, requirement: str):
    """An argparse type: `convert(text)`, refused unless `accept(value)`, with "must be <requirement>"."""
    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = convert.__name__  # argparse's "invalid int value: 'x'" for text that is no number
    return parse


def number_in(low: float, high: float, low_open=False, high_open=False):
    """An argparse type for a finite number in an interval, e.g. number_in(0, 1, low_open=True): (0, 1]."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    above = (lambda value: value > low) if low_open else (lambda value: value >= low)
    below = (lambda value: value < high) if high_open else (lambda value: value <= high)
    return checked(number, lambda value: above(value) and below(value), f"in {shown}")


positive_int = checked(int, lambda value: value > 0, "a positive integer")
non_negative_int = checked(int, lambda value: value >= 0, "zero or more")
positive_float = checked(number, lambda value: value > 0, "a positive number")
non_negative_float = checked(number, lambda value: value >= 0, "zero or more")


def dataset_name(text: str) -> str:
    """An argparse type: a dataset is a folder name in the data root, not a path; `.`, `..` and
    names with a separator would read or write outside its own folder."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if text in ("", ".", "..") or any(s in text for s in separators):
        tail = Path(text).name
        hint = f" (e.g. {tail})" if tail not in ("", ".", "..") else ""
        raise argparse.ArgumentTypeError(f"a dataset is a folder name, not a path; give its name alone{hint}, "
                                         f"and the folder holding it with --data-root or --source-root, got {text!r}")
    return text


def progress_bar(iterable, enabled=True, **options):
    """A tqdm bar on stdout, shown only when asked for and stdout is a terminal (not in logs)."""
    from tqdm import tqdm
    return tqdm(iterable, disable=None if enabled else True, file=sys.stdout, leave=False, **options)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`noun` for a count of one, else `many` (default: noun + 's'): what a printed count is followed by."""
    return noun if count == 1 else (many or noun + "s")


def counted(count: int, noun: str, many: str | None = None) -> str:
    """'1 image', '3 images', '0 images'."""
    return f"{count} {plural(count, noun, many)}"
