"""1_train.py: a 2-epoch run writes every file of the run directory, with the right contents."""
import json
import re

import pandas as pd
import pytest
import torch
from conftest import TINY_COUNTS

from toolkit import runs


def test_run_directory_holds_every_file(trained_run):
    names = {p.name for p in trained_run.run_dir.iterdir()}
    assert {"args.json", "last.pth", "train.csv", "valid.csv", "curves.svg"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert runs.DATETIME_PATTERN.fullmatch(trained_run.run_dir.name)
    assert not [n for n in names if ".tmp" in n]


def test_csv_logs_have_the_seed_columns_and_one_row_per_epoch(trained_run):
    train = pd.read_csv(trained_run.run_dir / "train.csv")
    valid = pd.read_csv(trained_run.run_dir / "valid.csv")
    assert list(train.columns) == ["epoch", "loss", "acc", "top5acc", "lr", "seconds"]
    assert (train["seconds"] > 0).all()
    assert list(valid.columns)[:5] == ["epoch", "loss", "acc", "top5acc", "lr"]
    assert list(train["epoch"]) == list(valid["epoch"]) == [1, 2]
    assert valid["acc"].between(0, 100).all() and (valid["top5acc"] == 100).all()  # 3 classes: top-5 is all
    assert (train["lr"] == 0.05).all()


def test_best_checkpoint_is_named_by_the_best_valid_accuracy(trained_run):
    valid = pd.read_csv(trained_run.run_dir / "valid.csv")
    best = runs.best_checkpoint(trained_run.run_dir)
    assert best.name == f"{valid['acc'].max():.2f}.pth"
    assert len([p for p in trained_run.run_dir.glob("*.pth") if p.name != "last.pth"]) == 1
    state = torch.load(best, weights_only=True)
    assert state["epoch"] == int(valid.loc[valid["acc"].idxmax(), "epoch"])
    assert state["class_names"] == ["alpha", "beta", "gamma"]


def test_args_json_records_arguments_classes_counts_and_versions(trained_run):
    record = json.loads((trained_run.run_dir / "args.json").read_text())
    assert record["model_index"] == 41 and record["epochs"] == 2 and record["lrstep"] == [100]
    assert record["class_names"] == ["alpha", "beta", "gamma"]
    train_dir = trained_run.data / "tiny" / "train"
    assert record["class_counts"] == [len(list((train_dir / c).iterdir())) for c in record["class_names"]]
    assert sum(record["class_counts"]) < sum(TINY_COUNTS.values())
    assert record["versions"]["torch"] == torch.__version__ and "torchvision" in record["versions"]


def test_tensorboard_has_loss_and_accuracy_for_both_splits(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(trained_run.run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/valid", "acc/train", "acc/valid"} <= tags
    valid = pd.read_csv(trained_run.run_dir / "valid.csv")
    logged = [e.value for e in events.Scalars("acc/valid")]
    assert logged == pytest.approx(list(valid["acc"]), rel=1e-5)


def test_dry_run_reads_everything_and_writes_no_run(tiny, run):
    from conftest import TRAIN_ARGS
    code, out, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--dry-run")
    assert code == 0, err
    assert "dry run: 23 training and 4 validation images of 3 classes read" in out
    estimate = re.search(r"one training batch of 8 took ([\d.]+)s on cpu: about (\S+) an epoch, (\S+) for 2 epochs",
                         out)
    assert estimate, out
    assert not tiny.logs.exists()
    broken = sorted((tiny.data / "tiny" / "valid" / "beta").iterdir())[0]
    broken.write_bytes(b"\x89PNG\r\n")
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--dry-run")
    assert code == 2 and str(broken) in err


def test_a_degenerate_best_checkpoint_is_warned_of_at_training_and_test(tiny, run, monkeypatch):
    from conftest import TRAIN_ARGS

    from toolkit import engine

    def only_alpha(self, batches, batch_size, progress=True, desc="evaluate"):  # every image predicted 'alpha'
        labels = batches.labels.cpu()
        return labels, torch.eye(batches.num_classes)[torch.zeros(len(labels), dtype=torch.long)]

    monkeypatch.setattr(engine.Engine, "predict", only_alpha)
    with pytest.warns(UserWarning) as warned:
        code, out, err = run("1_train", *TRAIN_ARGS, *tiny.data_args)
    assert code == 0, err
    assert [str(w.message) for w in warned if "never predicts" in str(w.message)] == [
        "the best checkpoint (epoch 1) on the valid split never predicts classes 'beta', 'gamma' right (recall 0): "
        "its averages hide a class it does not recognise; try a rebalancing objective (--objective LA or LDAM-DRW) "
        "or --sampler class"]
    assert re.search(r"epoch   2/2 .* \d+\.\ds    left 0s\n", out)  # the time left ends each epoch line
    with pytest.warns(UserWarning, match="on the test split never predicts classes 'beta', 'gamma' right"):
        code, out, err = run("2_test", "--model_index", "41", *tiny.data_args, "--no-progress")
    assert code == 0, err
    (run_dir,) = runs.list_runs(tiny.logs)
    scores = pd.read_csv(run_dir / "test_metrics.csv").iloc[0]
    assert scores["min_recall"] == 0 and scores["min_recall_class"] == "beta"  # the first of the tie
