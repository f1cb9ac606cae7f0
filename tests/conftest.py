"""Shared fixtures: tiny generated image folders and in-process script runs."""
import argparse
import functools
import importlib
import shutil
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# The tests train tiny models on tiny images: one thread is as fast, and it does not collapse when
# the machine is shared (two OpenMP threads spin-waiting for a busy core can be 10x slower).
torch.set_num_threads(1)

# Each class is a colour; noise makes the images differ; the sizes differ from the training size.
TINY_CLASSES = {"alpha": (220, 40, 40), "beta": (40, 200, 60), "gamma": (50, 60, 210)}
TINY_COUNTS = {"alpha": 16, "beta": 9, "gamma": 6}
TRAIN_ARGS = ["--model_index", "41", "--height", "16", "--width", "16", "--epochs", "2",
              "--batchsize", "8", "--lr", "0.05", "--lrstep", "100", "--no-progress"]


def objective_args(**overrides) -> "argparse.Namespace":
    """criterion.py's arguments at their defaults, with some overridden (e.g. la_tau=0.5)."""
    import criterion
    parser = argparse.ArgumentParser()
    criterion.add_arguments(parser)
    parsed = parser.parse_args([])
    for name, value in overrides.items():
        setattr(parsed, name, value)
    return parsed


def write_images(folder: Path, count: int, colour, seed: int, size=(12, 10)):
    """`count` noisy images of one colour, as PNG files named img000.png, ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise = rng.integers(-40, 40, size=(size[1], size[0], 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")


def make_source(source_root: Path, name="tiny", counts=None, classes=None) -> Path:
    counts = counts or TINY_COUNTS
    classes = classes or TINY_CLASSES
    for seed, (label, colour) in enumerate(classes.items()):
        write_images(source_root / name / label, counts[label], colour, seed)
    return source_root / name


def script(name: str):
    """A numbered script's module (e.g. "1_train"), imported fresh."""
    return importlib.import_module(name)


@pytest.fixture
def roots(tmp_path):
    paths = SimpleNamespace(source=tmp_path / "c_original_dataset", data=tmp_path / "a_datasets",
                            logs=tmp_path / "logs")
    paths.source.mkdir()
    paths.data.mkdir()
    return paths


EXIT_CRASHED = 1  # what Python exits with on an uncaught exception


def run_script(capsys, name, *argv):
    """A script's main(argv) in-process: (exit code, stdout, stderr). An exception that escapes
    main() (a bug: user mistakes are UserErrors) is what the command line would show: a traceback
    on stderr and exit code 1, so a test asserting on stderr sees it."""
    capsys.readouterr()
    try:
        code = script(name).main([str(a) for a in argv])
    except Exception:
        code = EXIT_CRASHED
        print(traceback.format_exc(), file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run(capsys):
    """Run a script's main(argv) in-process; returns (exit code, stdout, stderr)."""
    return functools.partial(run_script, capsys)


@pytest.fixture
def tiny(roots, run):
    """A split tiny dataset: roots plus `name` and the common argument lists."""
    make_source(roots.source)
    code, out, err = run("0_data_split", "--dataset", "tiny", "--source-root", roots.source,
                         "--data-root", roots.data)
    assert code == 0, err
    roots.name = "tiny"
    roots.data_args = ["--dataset", "tiny", "--data-root", roots.data, "--logs-root", roots.logs]
    return roots


# what 2_test.py writes into a run directory: other tests test the shared run in place
TEST_OUTPUTS = ("test_metrics.csv", "per_class.csv", "predictions.csv", "confusion_matrix.*", "reliability.svg",
                "pr_curves.svg", "test_settings.json", "logit-adjusted", "tau-normalised", "bootstrap-*", "shots-*",
                "data-*")


def copy_untested(logs: Path, target: Path) -> None:
    """A copy of a logs folder without any test results, as its runs were when training ended."""
    shutil.copytree(logs, target, ignore=shutil.ignore_patterns(*TEST_OUTPUTS))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One 2-epoch ERM run on the tiny dataset, shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("trained")
    paths = SimpleNamespace(source=base / "c_original_dataset", data=base / "a_datasets", logs=base / "logs")
    make_source(paths.source)
    assert script("0_data_split").main(["--dataset", "tiny", "--source-root", str(paths.source),
                                        "--data-root", str(paths.data)]) == 0
    paths.data_args = ["--dataset", "tiny", "--data-root", str(paths.data), "--logs-root", str(paths.logs)]
    assert script("1_train").main(TRAIN_ARGS + paths.data_args) == 0
    paths.run_dir = next((paths.logs / "ResNet20" / "tiny" / "ERM").iterdir())
    return paths
