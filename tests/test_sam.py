"""--sam: one SAM step by hand, BatchNorm statistics, COT's two steps, flags, torchrun."""
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO, TRAIN_ARGS

from toolkit import data, engine, metrics, plan, runs
from toolkit.predictor import Predictor


def half_squared_error(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).sum()


def linear_engine(rho, weights=(1.0, 1.0), lr=0.1, momentum=0.0, weight_decay=0.0, count=1):
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]))
    optimizers = tuple(torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
                       for _ in range(count))
    return model, engine.Engine(model, None, torch.device("cpu"), engine.Precision("fp32"), optimizers=optimizers,
                                sam_rho=rho)


X, TARGET = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0]])


def test_one_sam_step_on_a_linear_model_by_hand():
    """f(x) = w.x, w = (1, 1), x = (1, 2), L = (w.x)^2 / 2: the residual is 3, g = 3 x = (3, 6),
    ||g|| = 3 sqrt 5, e = rho x / sqrt 5; at w + e the residual is 3 + rho sqrt 5, so
    w <- w - lr (3 + rho sqrt 5) x (sam.py:16-36 transcribed)."""
    rho, lr = 0.05, 0.1
    model, run = linear_engine(rho, lr=lr)
    _, logged = run.steps((half_squared_error,), X, TARGET)
    residual = 3 + rho * math.sqrt(5)
    expected = [1 - lr * residual * 1, 1 - lr * residual * 2]
    assert model.weight.detach().flatten().tolist() == pytest.approx(expected, rel=1e-6)
    assert logged.item() == pytest.approx(4.5)  # the logged loss is the first pass's, at w


def test_weight_decay_and_momentum_act_at_w_not_at_the_perturbed_weights():
    rho, lr, decay = 0.5, 0.1, 0.01
    model, run = linear_engine(rho, lr=lr, momentum=0.9, weight_decay=decay)
    run.steps((half_squared_error,), X, TARGET)
    residual = 3 + rho * math.sqrt(5)
    gradient = [residual * 1 + decay * 1.0, residual * 2 + decay * 1.0]  # SGD's decay on w = (1, 1)
    assert model.weight.detach().flatten().tolist() == pytest.approx([1 - lr * g for g in gradient], rel=1e-6)


def test_a_zero_gradient_is_no_perturbation():
    model, run = linear_engine(0.05, weights=(0.0, 0.0))
    run.steps((half_squared_error,), X, TARGET)
    assert model.weight.detach().flatten().tolist() == [0.0, 0.0]


def test_batchnorm_statistics_are_updated_by_the_first_pass_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    expected = model[1].running_mean.clone()
    with torch.no_grad():
        features = model[0](x)
    expected = 0.9 * expected + 0.1 * features.mean(0)  # one update, momentum 0.1
    run = engine.Engine(model, None, torch.device("cpu"), engine.Precision("fp32"),
                        optimizers=(torch.optim.SGD(model.parameters(), lr=0.1),), sam_rho=0.05)
    run.steps((torch.nn.functional.cross_entropy,), x, y)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-6)
    assert model[1].momentum == 0.1  # given back after the second pass


def test_each_of_cots_two_steps_is_a_sam_step():
    """COT's CE step and complement step each get SAM's two passes: four forward passes a batch,
    and each optimiser steps from its own perturbed gradient."""
    model, run = linear_engine(0.05, count=2)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    run.steps((half_squared_error, half_squared_error), X, TARGET)
    assert len(calls) == 4
    # two SAM steps in a row, by hand: the second starts where the first ended
    w = torch.tensor([1.0, 1.0])
    for _ in range(2):
        residual = float(w @ X[0])
        g = residual * X[0]
        e = 0.05 * g / g.norm()
        w = w - 0.1 * float((w + e) @ X[0]) * X[0]
    assert model.weight.detach().flatten().tolist() == pytest.approx(w.tolist(), rel=1e-6)


@pytest.mark.parametrize("argv, rho, folder", [
    (["--sam"], 0.05, "ERM-SAM"), (["--sam", "0.5"], 0.5, "ERM-SAM"), ([], None, "ERM"),
    (["--sam", "0.5", "--drw", "3"], 0.5, "ERM-DRW-SAM"),
])
def test_sam_flag_and_folder(argv, rho, folder):
    args = plan.parse_args(["--model_index", "41", "--dataset", "d", *argv])
    assert args.sam == rho
    assert plan.recipe_name(args) == folder


@pytest.mark.parametrize("value", ["0", "-0.1", "abc", "nan"])
def test_a_bad_rho_is_one_error_line(run, value):
    code, out, err = run("1_train", "--model_index", "41", "--dataset", "d", "--sam", value)
    assert code == 2
    assert err.count("error:") == 1 and "--sam" in err and "Traceback" not in err


def test_a_sam_run_trains_cot_and_resumes_equal(tiny, run):
    """--sam with COT end to end, then 1 + 1 epochs equal 2 (SAM keeps no state between steps)."""
    args = [*TRAIN_ARGS, *tiny.data_args, "--objective", "COT", "--sam", "--deterministic", "--seed", "1"]
    assert run("1_train", *args, "--epochs", "2")[0] == 0
    assert run("1_train", *args, "--epochs", "1", "--logs-root", tiny.logs / "halves")[0] == 0
    half = next((tiny.logs / "halves" / "ResNet20" / "tiny" / "COT-SAM").iterdir())
    code, _, err = run("1_train", "--resume", half, "--epochs", "2", "--no-progress")
    assert code == 0, err
    whole = next((tiny.logs / "ResNet20" / "tiny" / "COT-SAM").iterdir())
    a, b = (torch.load(d / "last.pth", weights_only=True)["model"] for d in (whole, half))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.read_args(whole)["sam"] == 0.05


def test_torchrun_two_processes_keep_equal_weights_under_sam(tiny):
    """Each process validates its share with its own weights: if SAM let them drift apart, the
    gathered validation accuracy would differ from one process's evaluation of the checkpoint."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "1_train.py"), *TRAIN_ARGS, "--epochs", "2", "--precision", "fp32", "--device", "cpu",
               "--sam", "0.5", *map(str, tiny.data_args)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "ERM-SAM").iterdir())
    valid = pd.read_csv(run_dir / "valid.csv")
    single = Predictor(run_dir / "last.pth", device="cpu", precision="fp32")
    split = data.scan_split(tiny.data / "tiny", "valid", single.record.class_names)
    image_set = data.load_images(split, single.record.height, single.record.width, "cpu", progress=False)
    labels, logits = single.predict(image_set, 4, progress=False)
    assert metrics.epoch_metrics(labels, logits)["acc"] == pytest.approx(valid["acc"].iloc[-1])
