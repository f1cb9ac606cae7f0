"""Intervals over the test images (a stratified, seeded bootstrap) and post-hoc logit adjustment:
metrics.py by hand and against scikit-learn, then 2_test.py's files."""
import re
import shutil
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_untested
from sklearn import metrics as skm

from toolkit import metrics, runs

# class 0: two images, one right, one wrong (predicted 1); class 1: one image, right.
# A stratified resample draws 2 of class 0 and 1 of class 1, so it is one of
# {right, right} (1/4), {right, wrong} in either order (1/2), {wrong, wrong} (1/4):
#   acc       3/3, 2/3, 1/3
#   bacc      (1 + 1)/2, (1/2 + 1)/2, (0 + 1)/2
#   macro F1  class 0 F1 = 2TP/(2TP+FP+FN), class 1 likewise: (1+1)/2, (2/3+2/3)/2, (0+1/2)/2
SMALL_LABELS = np.array([0, 0, 1])
SMALL_LOGITS = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
SMALL_OUTCOMES = {"acc": (100.0, 200 / 3, 100 / 3), "bacc": (100.0, 75.0, 50.0),
                  "macro_f1": (100.0, 200 / 3, 25.0)}
SMALL_CHANCES = (0.25, 0.5, 0.25)


def noisy_case(n=3000, k=10, seed=1):
    """An imbalanced test set and logits of a so-so classifier."""
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.choice(k, size=n, p=np.geomspace(1, 0.1, k) / np.geomspace(1, 0.1, k).sum()))
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    return labels, logits


def test_all_correct_predictions_give_100_100():
    labels = np.array([0, 0, 0, 1, 1, 2])
    intervals = metrics.bootstrap_intervals(labels, np.eye(3)[labels] * 5, resamples=200)
    assert intervals == {f"{m}_ci_{end}": 100.0 for m in metrics.BOOTSTRAPPED for end in ("low", "high")}


@pytest.mark.parametrize("chunk", [None, 7])  # None: one chunk; 7 indices: 2 resamples a chunk
def test_the_enumerable_case(monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK", chunk)
    samples = metrics.bootstrap_samples(SMALL_LABELS, SMALL_LOGITS, resamples=4000, seed=3)
    for name, outcomes in SMALL_OUTCOMES.items():
        values = np.round(samples[name], 6)
        counts = Counter(values.tolist())
        assert set(counts) == {round(v, 6) for v in outcomes}, name
        for value, chance in zip(outcomes, SMALL_CHANCES):
            assert counts[round(value, 6)] / 4000 == pytest.approx(chance, abs=0.03), name
    # the 2.5 % and 97.5 % percentiles: the worst and the best outcome (each has chance 1/4)
    intervals = metrics.bootstrap_intervals(SMALL_LABELS, SMALL_LOGITS, resamples=4000, seed=3)
    assert intervals["acc_ci_low"] == pytest.approx(100 / 3) and intervals["acc_ci_high"] == 100.0
    assert intervals["bacc_ci_low"] == 50.0 and intervals["macro_f1_ci_low"] == pytest.approx(25.0)


def test_every_resample_keeps_each_class_support_and_draws_within_the_class():
    labels, _ = noisy_case(n=400)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(labels)  # classes interleaved, not in blocks
    indices = metrics.stratified_indices(shuffled, 300, rng)
    support = np.bincount(shuffled, minlength=10)
    drawn = shuffled[indices]
    assert indices.shape == (300, 400)
    assert all((np.bincount(row, minlength=10) == support).all() for row in drawn)
    assert (drawn == drawn[0]).all()  # column j always draws an image of the same class
    assert len(np.unique(indices)) > 0.9 * len(labels)  # with replacement, but over all the images


def test_each_resample_equals_sklearn_on_its_images():
    labels, logits = noisy_case(n=600)
    logits[labels == 9, 3] += 5  # class 9 (present) never predicted; many false positives of class 3
    preds = logits.argmax(1)
    samples = metrics.bootstrap_samples(labels, logits, resamples=20, seed=5)
    indices = metrics.stratified_indices(labels, 20, np.random.default_rng(5))  # the same draws
    present = np.unique(labels)
    for r in range(20):
        y, p = labels[indices[r]], preds[indices[r]]
        assert samples["acc"][r] == pytest.approx(100 * skm.accuracy_score(y, p))
        assert samples["bacc"][r] == pytest.approx(100 * skm.balanced_accuracy_score(y, p))
        # test_metrics' definition: macro F1 over the classes present in the labels
        assert samples["macro_f1"][r] == pytest.approx(
            100 * skm.f1_score(y, p, labels=present, average="macro", zero_division=0))
        scores = metrics.test_metrics(y, logits[indices[r]], np.ones(10))
        assert samples["macro_f1"][r] == pytest.approx(scores["macro_f1"])
        assert samples["min_recall"][r] == pytest.approx(scores["min_recall"]) == 0.0  # class 9: never predicted
        assert samples["min_recall"][r] == pytest.approx(
            100 * skm.recall_score(y, p, labels=present, average=None, zero_division=0).min())


def test_an_absent_class_that_is_predicted_counts_as_a_miss_not_a_class():
    # class 2 has no test image but is predicted once: test_metrics averages over classes 0 and 1
    labels = np.array([0, 0, 1, 1])
    logits = np.eye(3)[[0, 2, 1, 1]]
    intervals = metrics.bootstrap_intervals(labels, logits, resamples=50)
    scores = metrics.test_metrics(labels, logits, [1, 1, 1])
    assert intervals["macro_f1_ci_low"] <= scores["macro_f1"] <= intervals["macro_f1_ci_high"]
    assert intervals["macro_f1_ci_high"] == pytest.approx(100.0)  # the resample that draws no miss


def test_the_seed_fixes_the_numbers():
    labels, logits = noisy_case()
    first = metrics.bootstrap_intervals(labels, logits, seed=0)
    assert metrics.bootstrap_intervals(labels, logits, seed=0) == first
    other = metrics.bootstrap_intervals(labels, logits, seed=1)
    assert other != first
    assert all(abs(other[k] - first[k]) < 2.0 for k in first)  # another draw of the same distribution


def test_confidence_sets_the_percentiles():
    labels, logits = noisy_case()
    wide = metrics.bootstrap_intervals(labels, logits, confidence=0.99)
    narrow = metrics.bootstrap_intervals(labels, logits, confidence=0.5)
    for m in ("acc", "bacc", "macro_f1"):
        assert wide[f"{m}_ci_low"] < narrow[f"{m}_ci_low"] < narrow[f"{m}_ci_high"] < wide[f"{m}_ci_high"]
    with pytest.raises(ValueError):
        metrics.bootstrap_intervals(labels, logits, confidence=1.0)


def test_1000_resamples_of_a_few_thousand_images_are_fast():
    labels, logits = noisy_case(n=5000, k=20)
    started = time.perf_counter()
    metrics.bootstrap_intervals(labels, logits, resamples=1000)
    assert time.perf_counter() - started < 2.0  # ~0.1 s vectorised; sklearn in a loop takes far longer


# ---------------------------------------------------------------- logit adjustment

def test_adjusted_logits_subtract_tau_log_prior():
    logits = np.array([[1.0, 2.0, 3.0]])
    counts = [50, 30, 20]
    got = metrics.adjust_logits(logits, counts, 0.5)
    assert got == pytest.approx(logits - 0.5 * np.log(np.array(counts) / 100))
    assert metrics.adjust_logits(logits, counts, 0) is logits  # exactly the plain numbers
    with pytest.raises(ValueError):
        metrics.adjust_logits(logits, [10, 0, 5], 1.0)


def test_tau_is_chosen_by_balanced_accuracy_ties_to_the_smaller():
    # class 0 has 90 training images, class 1 ten: the plain logits favour class 0 by 1.5 on the
    # class-1 images; log(0.9/0.1) = 2.197, so taus above 1.5 / 2.197 = 0.68 recover them
    labels = np.array([0, 0, 0, 1, 1])
    logits = np.array([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [1.5, 0.0], [1.5, 0.0]])
    tau, by_tau = metrics.choose_tau(labels, logits, [90, 10])
    assert tau == 0.7 and by_tau[0.7] == 100.0 and by_tau[0.6] == 50.0
    assert list(by_tau) == list(metrics.TAU_GRID) and metrics.TAU_GRID[-1] == 2.0 and len(metrics.TAU_GRID) == 21
    # every tau ties: the smallest, 0
    assert metrics.choose_tau(labels, np.eye(2)[labels] * 50, [90, 10])[0] == 0.0


def test_intervals_print_beside_their_metric():
    table = metrics.format_table({"acc": 82.5612, "acc_ci_low": 74.1, "acc_ci_high": 90.2, "ece": float("nan")})
    assert table.splitlines()[0].split(None, 1)[1].strip() == "82.56 [74.10, 90.20]"
    assert "ci_low" not in table and table.splitlines()[1].split() == ["ece", "-"]


# ---------------------------------------------------------------- 2_test.py

TEST_FILES = ("test_metrics.csv", "per_class.csv", "predictions.csv", "confusion_matrix.csv",
              "confusion_matrix.svg", "reliability.svg")

@pytest.fixture
def copied(trained_run, tmp_path):
    """The shared trained run, in a logs folder and dataset of this test's own."""
    copy_untested(trained_run.logs, tmp_path / "logs")
    shutil.copytree(trained_run.data, tmp_path / "data")
    args = ["--model_index", "41", "--precision", "fp32", "--no-progress", "--dataset", "tiny",
            "--data-root", tmp_path / "data", "--logs-root", tmp_path / "logs"]
    run_dir = next((tmp_path / "logs" / "ResNet20" / "tiny" / "ERM").iterdir())
    return args, run_dir, tmp_path / "data" / "tiny"


def test_test_metrics_carry_intervals_and_a_rerun_writes_the_same_bytes(copied, run):
    args, run_dir, _ = copied
    code, out, err = run("2_test", *args)
    assert code == 0, err
    columns = list(pd.read_csv(run_dir / "test_metrics.csv").columns)
    assert columns[:6] == ["split", "checkpoint", "acc", "acc_ci_low", "acc_ci_high", "top5acc"]
    assert columns[columns.index("bacc"):columns.index("bacc") + 3] == ["bacc", "bacc_ci_low", "bacc_ci_high"]
    assert columns[columns.index("macro_f1"):columns.index("macro_f1") + 3] == \
        ["macro_f1", "macro_f1_ci_low", "macro_f1_ci_high"]
    row = pd.read_csv(run_dir / "test_metrics.csv").iloc[0]
    assert row["acc_ci_low"] <= row["acc"] <= row["acc_ci_high"]
    assert re.search(r"^acc\s+\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]$", out, re.M)
    first = {name: (run_dir / name).read_bytes() for name in TEST_FILES}
    assert run("2_test", *args)[0] == 0
    assert {name: (run_dir / name).read_bytes() for name in first} == first


def test_bootstrap_0_writes_no_intervals_and_the_same_numbers_beside_the_runs_own_test(copied, run):
    args, run_dir, _ = copied
    assert run("2_test", *args)[0] == 0
    canonical = {name: (run_dir / name).read_bytes() for name in TEST_FILES}
    with_intervals = pd.read_csv(run_dir / "test_metrics.csv")
    code, out, _ = run("2_test", *args, "--bootstrap", "0")
    assert code == 0
    plain = pd.read_csv(run_dir / "bootstrap-0" / "test_metrics.csv")
    assert not [c for c in plain.columns if "_ci_" in c] and "[" not in out
    pd.testing.assert_frame_equal(plain, with_intervals[plain.columns])
    assert {name: (run_dir / name).read_bytes() for name in TEST_FILES} == canonical  # what 4_report.py reads


def test_logit_adjust_0_reproduces_the_plain_numbers(copied, run):
    args, run_dir, _ = copied
    assert run("2_test", *args)[0] == 0
    code, out, err = run("2_test", *args, "--logit-adjust", "0")
    assert code == 0, err
    adjusted_dir = run_dir / "logit-adjusted"
    plain, adjusted = pd.read_csv(run_dir / "test_metrics.csv"), pd.read_csv(adjusted_dir / "test_metrics.csv")
    assert list(adjusted.columns) == ["split", "checkpoint", "tau"] + list(plain.columns[2:])
    assert adjusted.loc[0, "tau"] == 0
    pd.testing.assert_frame_equal(adjusted.drop(columns="tau"), plain)
    for name in TEST_FILES[1:]:
        assert (adjusted_dir / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_logit_adjust_tau_changes_the_numbers_by_the_prior(copied, run):
    args, run_dir, _ = copied
    assert run("2_test", *args, "--logit-adjust", "1.5")[0] == 0
    predictions = pd.read_csv(run_dir / "logit-adjusted" / "predictions.csv")
    assert run("2_test", *args)[0] == 0
    plain = pd.read_csv(run_dir / "predictions.csv")
    # probabilities after adjustment: p_c / prior_c^1.5, renormalised
    counts = np.array(torch.load(runs.best_checkpoint(run_dir), weights_only=True)["class_counts"], dtype=float)
    names = ["alpha", "beta", "gamma"]
    probs = np.stack([plain.apply(lambda r: next(r[f"top{k}_prob"] for k in (1, 2, 3) if r[f"top{k}"] == n), axis=1)
                      for n in names], axis=1)
    expected = probs / (counts / counts.sum()) ** 1.5
    expected = 100 * expected / expected.sum(axis=1, keepdims=True)
    got = np.stack([predictions.apply(lambda r: next(r[f"top{k}_prob"] for k in (1, 2, 3) if r[f"top{k}"] == n),
                                      axis=1) for n in names], axis=1)
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert pd.read_csv(run_dir / "logit-adjusted" / "test_metrics.csv").loc[0, "tau"] == 1.5


def rotate_test_classes(dataset, names=("alpha", "beta", "gamma")):
    """Move every test image to another class folder (alpha -> beta -> gamma -> alpha)."""
    for name in names:
        (dataset / "test" / name).rename(dataset / "test" / f"{name}.old")
    for name, target in zip(names, names[1:] + names[:1]):
        (dataset / "test" / f"{name}.old").rename(dataset / "test" / target)


def test_logit_adjust_auto_chooses_tau_on_the_valid_split_only(copied, run, monkeypatch):
    args, run_dir, dataset = copied
    seen = []
    choose = metrics.choose_tau

    def spy(labels, logits, train_counts, *rest):
        seen.append((np.asarray(labels).copy(), np.asarray(logits, dtype=np.float64).copy()))
        return choose(labels, logits, train_counts, *rest)
    monkeypatch.setattr(metrics, "choose_tau", spy)
    code, out, err = run("2_test", *args, "--logit-adjust", "auto")
    assert code == 0, err
    tau = pd.read_csv(run_dir / "logit-adjusted" / "test_metrics.csv").loc[0, "tau"]
    assert f"tau {tau:g}" in out and tau in metrics.TAU_GRID
    valid_counts = [len(list((dataset / "valid" / c).iterdir())) for c in ("alpha", "beta", "gamma")]
    assert len(seen) == 1 and np.bincount(seen[0][0], minlength=3).tolist() == valid_counts

    # turn the test split upside down (every image moves to another class): tau and what the
    # choice saw stay the same, the test numbers change
    rotate_test_classes(dataset)
    before = pd.read_csv(run_dir / "logit-adjusted" / "test_metrics.csv")
    assert run("2_test", *args, "--logit-adjust", "auto")[0] == 0
    assert pd.read_csv(run_dir / "logit-adjusted" / "test_metrics.csv").equals(before)  # other data: kept
    after = pd.read_csv(next((run_dir / "logit-adjusted").glob("data-*")) / "test_metrics.csv")
    assert len(seen) == 2
    assert (seen[1][0] == seen[0][0]).all() and np.array_equal(seen[1][1], seen[0][1])
    assert after.loc[0, "tau"] == tau
    assert not after.drop(columns="tau").equals(before.drop(columns="tau"))


def test_logit_adjust_rejects_a_negative_or_unknown_tau(copied, run):
    args, _, _ = copied
    for value in ("-1", "best"):
        code, _, err = run("2_test", *args, "--logit-adjust", value)
        assert code == 2 and "--logit-adjust" in err

