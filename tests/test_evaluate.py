"""2_test.py: metrics, predictions and pictures that agree with the checkpoint's own predictions."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import get_model
from conftest import copy_untested
from toolkit import evaluation, runs


def independent_predictions(run_dir, split_dir):
    """The best checkpoint's predictions, computed here with PIL and plain torch (no toolkit loader)."""
    state = torch.load(runs.best_checkpoint(run_dir), weights_only=True)
    model = get_model.build_model(state["model_index"], len(state["class_names"]), state["height"], state["width"])
    model.load_state_dict(state["model"])
    model.eval()
    mean, std = torch.tensor(state["mean"]).view(3, 1, 1), torch.tensor(state["std"]).view(3, 1, 1)
    labels, preds = [], []
    for label, name in enumerate(state["class_names"]):
        for path in sorted((split_dir / name).iterdir()):
            image = Image.open(path).convert("RGB").resize((state["width"], state["height"]), Image.BILINEAR)
            x = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - mean) / std
            with torch.no_grad():
                preds.append(model(x[None]).argmax(1).item())
            labels.append(label)
    return np.array(labels), np.array(preds)


@pytest.fixture(scope="module")
def tested(trained_run):
    import importlib
    code = importlib.import_module("2_test").main(
        ["--model_index", "41", "--objective", "ERM", "--precision", "fp32", "--no-progress"] + trained_run.data_args)
    assert code == 0
    return trained_run


def test_printed_accuracy_equals_the_checkpoints_predictions(trained_run, run):
    code, out, err = run("2_test", "--model_index", "41", "--precision", "fp32", "--no-progress",
                         *trained_run.data_args)
    assert code == 0, err
    labels, preds = independent_predictions(trained_run.run_dir, trained_run.data / "tiny" / "test")
    printed = float(re.search(r"top-1 accuracy ([\d.]+)%", out).group(1))
    assert printed == pytest.approx(100 * (labels == preds).mean(), abs=0.005)
    assert "top-5 accuracy 100.00%" in out


def test_confusion_matrix_svg_names_the_dataset_classes(tested):
    root = ET.parse(tested.run_dir / "confusion_matrix.svg").getroot()
    texts = {t.text for t in root.iter() if t.text}
    assert {"alpha", "beta", "gamma"} <= texts
    assert {"true class", "predicted class"} <= texts


def test_confusion_csv_and_predictions_agree(tested):
    predictions = pd.read_csv(tested.run_dir / "predictions.csv")
    confusion = pd.read_csv(tested.run_dir / "confusion_matrix.csv", index_col=0)
    expected = pd.crosstab(predictions["true"], predictions["predicted"]).reindex(
        index=confusion.index, columns=confusion.columns, fill_value=0)
    assert (confusion.values == expected.values).all()
    labels, preds = independent_predictions(tested.run_dir, tested.data / "tiny" / "test")
    names = np.array(["alpha", "beta", "gamma"])
    assert list(predictions["predicted"]) == list(names[preds])
    assert list(predictions.columns[:4]) == ["path", "true", "predicted", "probability"]
    assert predictions["path"].str.startswith("test/").all()


def test_metrics_files(tested):
    scores = pd.read_csv(tested.run_dir / "test_metrics.csv")
    predictions = pd.read_csv(tested.run_dir / "predictions.csv")
    assert scores.loc[0, "acc"] == pytest.approx(100 * (predictions["true"] == predictions["predicted"]).mean())
    # tiny has at most 12 training images per class: all few-shot, the other groups empty (not 0)
    assert np.isnan(scores.loc[0, "many_shot"]) and np.isnan(scores.loc[0, "medium_shot"])
    per_class = pd.read_csv(tested.run_dir / "per_class.csv")
    assert list(per_class["class"]) == ["alpha", "beta", "gamma"]  # head to tail
    assert list(per_class["support"]) == [2, 1, 1]
    assert ET.parse(tested.run_dir / "reliability.svg").getroot() is not None


def test_without_a_test_split_the_valid_split_is_used(trained_run, run, tmp_path):
    import shutil
    data = tmp_path / "a_datasets"
    shutil.copytree(trained_run.data / "tiny", data / "tiny", ignore=shutil.ignore_patterns("test"))
    logs = tmp_path / "logs"
    shutil.copytree(trained_run.logs, logs)
    with pytest.warns(UserWarning, match="no test split"):
        code, out, err = run("2_test", "--model_index", "41", "--dataset", "tiny", "--data-root", data,
                             "--logs-root", logs, "--no-progress")
    assert code == 0, err
    assert "on the valid split" in out


def test_a_confirmation_test_writes_exactly_the_files_of_2_test(trained_run, run, tmp_path):
    """evaluation.test_run (what a search's confirmation calls) and `2_test.py --run RUN` write the
    same files with the same bytes: the same bootstrap, the same figures, the same settings."""
    copy_untested(trained_run.logs, tmp_path / "by-script")
    copy_untested(trained_run.logs, tmp_path / "by-search")
    by_script = next((tmp_path / "by-script" / "ResNet20" / "tiny" / "ERM").iterdir())
    by_search = tmp_path / "by-search" / by_script.relative_to(tmp_path / "by-script")
    code, _, err = run("2_test", "--run", by_script, "--precision", "fp32", "--no-progress", "--workers", "0")
    assert code == 0, err
    scores = evaluation.test_run(by_search, precision="fp32", workers=0)
    for name in evaluation.TEST_FILES:
        assert (by_search / name).read_bytes() == (by_script / name).read_bytes(), name
    written = pd.read_csv(by_search / "test_metrics.csv").iloc[0]
    assert written["acc"] == pytest.approx(scores["acc"]) and "acc_ci_low" in written
    assert sorted(p.name for p in by_search.iterdir()) == sorted(p.name for p in by_script.iterdir())
