"""Runs that survive: resume, Ctrl-C, SIGKILL, early stopping, non-finite losses, safe checkpoints."""
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import REPO, TRAIN_ARGS

from toolkit import augment, runs
from toolkit.record import load_checkpoint


def only_run(logs, folder="ERM"):
    found = list((logs / "ResNet20" / "tiny" / folder).iterdir())
    assert len(found) == 1, found
    return found[0]


def train_args(tiny, logs, *extra):
    return [*TRAIN_ARGS, "--dataset", "tiny", "--data-root", tiny.data, "--logs-root", logs,
            "--seed", "3", "--deterministic", *extra]


def assert_same_run(first, second):
    """Identical final weights and identical CSV rows."""
    a = torch.load(first / "last.pth", weights_only=True)["model"]
    b = torch.load(second / "last.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for log in ("train.csv", "valid.csv"):  # all but the clock
        pd.testing.assert_frame_equal(pd.read_csv(first / log).drop(columns="seconds", errors="ignore"),
                                      pd.read_csv(second / log).drop(columns="seconds", errors="ignore"))


@pytest.mark.parametrize("objective", ["ERM", "GHMC", "COT"])  # not SPBL: its pace depends on --epochs
def test_two_plus_two_epochs_equal_four(tiny, run, objective):
    whole, halves = tiny.logs / "whole", tiny.logs / "halves"
    assert run("1_train", *train_args(tiny, whole, "--epochs", "4", "--objective", objective))[0] == 0
    assert run("1_train", *train_args(tiny, halves, "--epochs", "2", "--objective", objective))[0] == 0
    half = only_run(halves, objective)
    code, out, err = run("1_train", "--resume", half, "--epochs", "4", "--no-progress")
    assert code == 0, err
    assert f"resuming {half} after epoch 2" in out
    assert list(pd.read_csv(half / "valid.csv")["epoch"]) == [1, 2, 3, 4]
    assert_same_run(only_run(whole, objective), half)


@pytest.mark.parametrize("objective, options", [("ERM", []), ("SPBL", []),
                                                ("ERM", ["--augment", "randaugment", "--mixup", "0.2"]),
                                                ("ERM", ["--sam", "0.5", "--max-norm", "0.5"])])
def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny, run, monkeypatch, objective, options):
    folder = objective + ("-SAM-MaxNorm" if "--sam" in options else "")  # MaxNorm's threshold is in last.pth
    whole, cut = tiny.logs / "whole", tiny.logs / "cut"
    assert run("1_train", *train_args(tiny, whole, "--epochs", "3", "--objective", objective, *options))[0] == 0
    choose, calls = augment.batch_augmentation, []

    def interrupted_on_the_fifth_batch(*choice):
        augmentation = choose(*choice)

        def interrupting(images, generator):
            calls.append(1)
            if len(calls) == 5:  # the second batch of epoch 2 (3 batches an epoch)
                signal.raise_signal(signal.SIGINT)
            return augmentation(images, generator)
        return interrupting

    monkeypatch.setattr(augment, "batch_augmentation", interrupted_on_the_fifth_batch)
    code, out, err = run("1_train", *train_args(tiny, cut, "--epochs", "3", "--objective", objective, *options))
    assert code == 130, err
    stopped = only_run(cut, folder)
    assert f"to continue: python 1_train.py --resume {stopped}" in out
    state = torch.load(stopped / "last.pth", weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 2)
    assert len(pd.read_csv(stopped / "train.csv")) == 1
    monkeypatch.setattr(augment, "batch_augmentation", choose)
    code, out, err = run("1_train", "--resume", stopped, "--no-progress")
    assert code == 0, err
    assert "after epoch 1, batch 2" in out
    assert_same_run(only_run(whole, folder), stopped)


def test_resume_by_datetime_and_what_may_not_change(tiny, run):
    assert run("1_train", *train_args(tiny, tiny.logs, "--epochs", "1"))[0] == 0
    stamp = only_run(tiny.logs).name
    by_date = ["--resume", stamp, "--model_index", "41", "--dataset", "tiny", "--data-root", tiny.data,
               "--logs-root", tiny.logs, "--no-progress"]
    code, _, err = run("1_train", *by_date, "--epochs", "2", "--lr", "0.5")
    assert code == 2 and "--lr cannot change" in err
    code, _, err = run("1_train", *by_date)
    assert code == 2 and "has finished its 1 epoch; pass a larger --epochs" in err  # not "1 epochs"
    assert run("1_train", *by_date, "--epochs", "2")[0] == 0
    assert len(pd.read_csv(only_run(tiny.logs) / "train.csv")) == 2
    code, _, err = run("1_train", "--resume", "2001-01-01-00-00-00", "--no-progress")
    assert code == 2 and "needs --model_index, --dataset" in err


def test_resume_refuses_another_class_list_or_model(tiny, run):
    assert run("1_train", *train_args(tiny, tiny.logs, "--epochs", "1"))[0] == 0
    run_dir = only_run(tiny.logs)
    for split in ("train", "valid", "test"):
        (tiny.data / "tiny" / split / "gamma").rename(tiny.data / "tiny" / split / "delta")
    code, _, err = run("1_train", "--resume", run_dir, "--epochs", "2", "--no-progress")
    assert code == 2 and "classes differ" in err and "missing ['gamma']" in err and "new ['delta']" in err
    for split in ("train", "valid", "test"):
        (tiny.data / "tiny" / split / "delta").rename(tiny.data / "tiny" / split / "gamma")
    state = torch.load(run_dir / "last.pth", weights_only=True)
    torch.save({**state, "model_index": 43}, run_dir / "last.pth")
    code, _, err = run("1_train", "--resume", run_dir, "--epochs", "2", "--no-progress")
    assert code == 2 and "model_index 43, not 41" in err


def test_sigkill_at_any_moment_leaves_loadable_checkpoints(tiny):
    """Kill training with SIGKILL at random moments (checkpoints are written every epoch, so some
    kills land in a write), load both checkpoints, resume, and kill again."""
    command = [sys.executable, str(REPO / "1_train.py"), *map(str, train_args(tiny, tiny.logs, "--epochs", "200"))]
    rng = random.Random(0)
    for attempt in range(4):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        run_dir = wait_for_checkpoint(tiny.logs, process)
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        last = load_checkpoint(run_dir / "last.pth")
        best = load_checkpoint(runs.best_checkpoint(run_dir))
        # a kill between writing a new best and last.pth leaves the best one epoch ahead; the resumed
        # run repeats that epoch and writes the same best again
        assert last.epoch >= 1 and best.epoch <= last.epoch + 1
        epochs = list(pd.read_csv(run_dir / "train.csv")["epoch"])
        assert epochs == list(range(1, len(epochs) + 1))
        command = [sys.executable, str(REPO / "1_train.py"), "--resume", str(run_dir), "--no-progress"]
    assert len(pd.read_csv(run_dir / "train.csv")) >= 4


def wait_for_checkpoint(logs, process, timeout=120):
    """The run directory, once it holds a checkpoint one epoch newer than when we started."""
    start, seen = time.monotonic(), {}
    for path in logs.rglob("last.pth"):
        seen[path] = path.stat().st_mtime_ns
    while time.monotonic() - start < timeout:
        assert process.poll() is None, "training ended before it was killed"
        for path in logs.rglob("last.pth"):
            if seen.get(path) != path.stat().st_mtime_ns:
                return path.parent
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_early_stop(tiny, run):
    code, out, err = run("1_train", *train_args(tiny, tiny.logs, "--epochs", "30", "--lr", "1e-6",
                                                "--early-stop", "2"))
    assert code == 0, err
    valid = pd.read_csv(only_run(tiny.logs) / "valid.csv")
    best_epoch = int(valid.loc[valid["acc"].idxmax(), "epoch"])
    assert len(valid) == best_epoch + 2 < 30
    assert f"early stop: valid acc has not improved for 2 epochs (best {valid['acc'].max():.2f} at epoch " \
           f"{best_epoch})" in out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoints(tiny, run, monkeypatch):
    from losses.cross_entropy import CrossEntropy
    forward, calls = CrossEntropy.forward, []

    def nan_on_the_fifth_batch(self, logits, targets):
        calls.append(1)
        loss = forward(self, logits, targets)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(CrossEntropy, "forward", nan_on_the_fifth_batch)
    code, _, err = run("1_train", *train_args(tiny, tiny.logs, "--epochs", "3"))
    assert code == 2 and "non-finite at epoch 2, batch 2" in err
    run_dir = only_run(tiny.logs)
    assert load_checkpoint(run_dir / "last.pth").epoch == 1
    assert runs.best_checkpoint(run_dir) is not None
    assert len(pd.read_csv(run_dir / "train.csv")) == 1


def test_a_failure_in_the_first_epoch_leaves_no_run_directory(tiny, run, monkeypatch):
    from losses.cross_entropy import CrossEntropy
    monkeypatch.setattr(CrossEntropy, "forward", lambda self, z, y: torch.tensor(float("nan")) * z.sum())
    code, _, err = run("1_train", *train_args(tiny, tiny.logs, "--epochs", "2"))
    assert code == 2 and "non-finite at epoch 1" in err
    assert not list(tiny.logs.rglob("args.json"))


def test_checkpoints_cannot_run_code(trained_run, run, tmp_path):
    """A .pth that would run code when unpickled is refused, and the code does not run."""
    import shutil
    logs = tmp_path / "logs"
    shutil.copytree(trained_run.logs, logs)
    run_dir = next((logs / "ResNet20" / "tiny" / "ERM").iterdir())
    marker = tmp_path / "pwned"
    best = runs.best_checkpoint(run_dir)
    torch.save({"model": Exploit(str(marker))}, best)
    code, _, err = run("2_test", "--model_index", "41", "--dataset", "tiny", "--data-root", trained_run.data,
                       "--logs-root", logs, "--no-progress")
    assert code == 2 and f"cannot load checkpoint {best}" in err
    assert not marker.exists()


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_an_objective_state_of_another_version_is_a_clear_error(tiny, run):
    assert run("1_train", *train_args(tiny, tiny.logs, "--epochs", "1", "--objective", "SPBL"))[0] == 0
    run_dir = only_run(tiny.logs, "SPBL")
    state = torch.load(run_dir / "last.pth", weights_only=True)
    state["criterion"] = {"thresholds": torch.zeros(3), "pace": torch.tensor(0.5)}  # the withdrawn SPBL's buffers
    torch.save(state, run_dir / "last.pth")
    code, _, err = run("1_train", "--resume", run_dir, "--epochs", "2", "--no-progress")
    assert code == 2 and "its SPBL state was written by another version of the objective" in err
