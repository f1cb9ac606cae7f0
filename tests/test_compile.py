"""--compile: the compiled model trains the same step as the eager one (it used to die in Engine)."""
import pandas as pd
import pytest
from conftest import TRAIN_ARGS

COMPILE_ARGS = [*TRAIN_ARGS, "--epochs", "1", "--batchsize", "32", "--height", "8", "--width", "8",
                "--precision", "fp32", "--device", "cpu"]


def train_loss(tiny, run, logs, *extra):
    code, out, err = run("1_train", *COMPILE_ARGS, "--dataset", "tiny", "--data-root", tiny.data,
                         "--logs-root", logs, *extra)
    assert code == 0, err
    return pd.read_csv(next(logs.rglob("train.csv")))["loss"].item()


def test_one_compiled_step_equals_the_eager_step(tiny, run):
    eager = train_loss(tiny, run, tiny.logs / "eager")
    compiled = train_loss(tiny, run, tiny.logs / "compiled", "--compile")
    assert compiled == pytest.approx(eager, rel=1e-4)
