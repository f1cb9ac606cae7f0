"""Validation monitoring during training and 4_report.py's comparison of runs."""
import importlib
import shutil
import time
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
import torch
from conftest import TRAIN_ARGS

from toolkit import runs


@pytest.fixture(scope="module")
def two_runs(trained_run, tmp_path_factory):
    """The shared ERM run (tested) and a second, CCE run monitored by bacc (untested), in a copy."""
    logs = tmp_path_factory.mktemp("report") / "logs"
    shutil.copytree(trained_run.logs, logs)
    data_args = ["--dataset", "tiny", "--data-root", str(trained_run.data), "--logs-root", str(logs)]
    assert importlib.import_module("2_test").main(["--model_index", "41", "--no-progress"] + data_args) == 0
    while time.strftime(runs.DATETIME_FORMAT) <= trained_run.run_dir.name:  # the CCE run is the newer one
        time.sleep(0.05)
    assert importlib.import_module("1_train").main(
        TRAIN_ARGS + data_args + ["--objective", "CCE", "--monitor", "bacc"]) == 0
    folder = logs / "ResNet20" / "tiny"
    return folder, runs.list_runs(folder)


def test_monitor_names_the_checkpoint_by_its_metric(two_runs):
    _, (erm, cce) = two_runs
    valid = pd.read_csv(cce / "valid.csv")
    assert list(valid.columns) == ["epoch", "loss", "acc", "top5acc", "lr", "bacc", "macro_f1"]
    best = runs.best_checkpoint(cce)
    assert best.name == f"{valid['bacc'].max():.2f}.pth"
    state = torch.load(best, weights_only=True)
    assert state["monitor"] == "bacc" and state["epoch"] == int(valid.loc[valid["bacc"].idxmax(), "epoch"])


def test_curves_are_redrawn_every_epoch(tiny, run, monkeypatch):
    from toolkit import plots
    drawn = []
    monkeypatch.setattr(plots, "training_curves", lambda train, valid, path, monitor: drawn.append(len(valid)))
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args, "--epochs", "3")[0] == 0
    assert drawn == [1, 2, 3]


def test_summary_rows_match_the_logs(two_runs, run):
    folder, found = two_runs
    code, out, err = run("4_report", folder)
    assert code == 0, err
    summary = pd.read_csv(folder / "summary.csv", dtype={"datetime": str})
    assert list(summary["objective"]) == ["ERM", "CCE"]
    for row, run_dir in zip(summary.to_dict("records"), found):
        valid = pd.read_csv(run_dir / "valid.csv")
        monitor = row["monitor"]
        assert row["datetime"] == run_dir.name and row["epochs"] == len(valid)
        assert row["best_valid"] == pytest.approx(valid[monitor].max(), abs=1e-4)
        assert row["best_epoch"] == valid.loc[valid[monitor].idxmax(), "epoch"]
    tested = pd.read_csv(found[0] / "test_metrics.csv")
    assert summary.loc[0, "test_bacc"] == pytest.approx(tested.loc[0, "bacc"], abs=1e-4)
    assert pd.isna(summary.loc[1, "test_bacc"])  # the CCE run was not tested
    assert out.index("ERM") < out.index("CCE")  # sorted by test balanced accuracy, untested last


def test_report_figures_name_runs_and_classes(two_runs, run):
    folder, found = two_runs
    assert run("4_report", folder)[0] == 0
    curves = {t.text for t in ET.parse(folder / "valid_curves.svg").getroot().iter() if t.text}
    assert {f"ERM {found[0].name}", f"CCE {found[1].name}"} <= curves
    recall = {t.text for t in ET.parse(folder / "per_class_recall.svg").getroot().iter() if t.text}
    assert {"alpha", "beta", "gamma", f"ERM {found[0].name}"} <= recall
    assert f"CCE {found[1].name}" not in recall  # untested runs have no per-class recall


def test_report_on_a_folder_without_runs(tmp_path, run):
    code, _, err = run("4_report", tmp_path)
    assert code == 2 and "no runs below" in err


def test_the_worst_class_is_printed_by_its_name_not_as_a_number(tmp_path, capsys):
    """Digit classes read as numbers became '9.00' in the summary beside an untested run."""
    from test_recipes import fake_run
    tested = fake_run(tmp_path, seed=0)
    scores = pd.read_csv(tested / "test_metrics.csv").assign(acc=91, min_recall=0.0, min_recall_class="07")
    scores.to_csv(tested / "test_metrics.csv", index=False)
    fake_run(tmp_path, seed=1, tested=False)
    assert runs.run_summary(tested)["test_min_recall_class"] == "07"
    assert importlib.import_module("4_report").main([str(tmp_path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert any(line.split()[-2:] == ["0.00", "07"] and " 91.00 " in line for line in shown), shown  # not '91'
