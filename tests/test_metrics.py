"""metrics.py against scikit-learn and against numbers worked out by hand."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn import metrics as skm

from toolkit import metrics

# 4 classes, 12 test samples. Class 2 is in the labels but never predicted (recall 0);
# class 3 is absent from the labels but predicted once (a false positive, row 11).
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
LOGITS = np.array([
    [3.0, 1.0, 0.5, 0.0],  # true 0 -> 0
    [2.5, 0.5, 1.0, 0.2],  # true 0 -> 0
    [2.0, 1.5, 0.0, 0.1],  # true 0 -> 0
    [1.2, 0.8, 0.9, 0.3],  # true 0 -> 0
    [0.5, 2.0, 0.1, 0.0],  # true 0 -> 1
    [0.1, 2.2, 0.3, 0.0],  # true 1 -> 1
    [0.0, 1.8, 1.0, 0.4],  # true 1 -> 1
    [0.3, 1.1, 0.2, 0.9],  # true 1 -> 1
    [1.6, 1.0, 0.4, 0.0],  # true 1 -> 0
    [1.4, 0.2, 1.3, 0.1],  # true 2 -> 0
    [0.2, 1.7, 1.5, 0.0],  # true 2 -> 1
    [0.0, 0.4, 1.2, 1.9],  # true 2 -> 3
])
PREDS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 3])
PRESENT = [0, 1, 2]
# Recalls by hand: class 0: 4/5 = 80 %, class 1: 3/4 = 75 %, class 2: 0/3 = 0 %.
RECALLS = {0: 80.0, 1: 75.0, 2: 0.0}
# Train counts chosen to hit both shot-group boundaries with (hi, lo) = (100, 20):
# class 0 (500) many, class 1 (100 = hi) medium, class 2 (20 = lo) medium, class 3 (5) few but absent.
TRAIN_COUNTS = [500, 100, 20, 5]


def probabilities(logits):
    return softmax(logits, axis=1)


def test_fixture_predictions_are_what_the_comments_say():
    assert (LOGITS.argmax(axis=1) == PREDS).all()


def test_epoch_metrics_match_sklearn():
    got = metrics.epoch_metrics(LABELS, LOGITS)
    assert list(got) == ["loss", "acc", "top5acc", "bacc", "macro_f1"]
    assert got["loss"] == pytest.approx(skm.log_loss(LABELS, probabilities(LOGITS), labels=range(4)))
    assert got["acc"] == pytest.approx(100 * skm.accuracy_score(LABELS, PREDS)) == pytest.approx(700 / 12)
    assert got["top5acc"] == 100.0  # k = min(5, K) = 4: every class is in the top 4
    assert got["bacc"] == pytest.approx((80 + 75 + 0) / 3)
    # macro F1 over present OR predicted classes: class 3 (predicted, F1 0) counts, unlike in test_metrics
    assert got["macro_f1"] == pytest.approx(100 * skm.f1_score(LABELS, PREDS, average="macro", zero_division=0))
    assert got["macro_f1"] != pytest.approx(
        100 * skm.f1_score(LABELS, PREDS, labels=PRESENT, average="macro", zero_division=0))


def test_bacc_equals_sklearn_balanced_accuracy():
    with warnings.catch_warnings():  # sklearn warns that class 3 is predicted but not in y_true
        warnings.simplefilter("ignore")
        expected = 100 * skm.balanced_accuracy_score(LABELS, PREDS)
    assert metrics.epoch_metrics(LABELS, LOGITS)["bacc"] == pytest.approx(expected)
    assert metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS)["bacc"] == pytest.approx(expected)


def test_test_metrics_match_sklearn_over_present_classes():
    got = metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS)
    assert list(got) == ["acc", "top5acc", "bacc", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
                         "gmean", "min_recall", "min_recall_class", "mauc", "ece", "nll", "many_shot", "medium_shot",
                         "few_shot"]
    macro_on_present = dict(labels=PRESENT, average="macro", zero_division=0)
    assert got["acc"] == pytest.approx(100 * skm.accuracy_score(LABELS, PREDS))
    assert got["top5acc"] == 100.0
    assert got["macro_precision"] == pytest.approx(100 * skm.precision_score(LABELS, PREDS, **macro_on_present))
    assert got["macro_recall"] == pytest.approx(100 * skm.recall_score(LABELS, PREDS, **macro_on_present))
    assert got["macro_recall"] == pytest.approx((80 + 75 + 0) / 3)
    assert got["macro_f1"] == pytest.approx(100 * skm.f1_score(LABELS, PREDS, **macro_on_present))
    weighted_f1 = skm.f1_score(LABELS, PREDS, labels=PRESENT, average="weighted", zero_division=0)
    assert got["weighted_f1"] == pytest.approx(100 * weighted_f1)
    assert got["nll"] == pytest.approx(skm.log_loss(LABELS, probabilities(LOGITS), labels=range(4)))
    assert got["gmean"] == 0.0  # class 2 has recall 0


def test_min_recall_names_the_worst_class_by_hand():
    # recalls 80, 75, 0 (class 2 never predicted right); class 3 is absent from the labels, not a 0
    got = metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS, class_names=["cat", "dog", "owl", "eel"])
    assert got["min_recall"] == 0.0 and got["min_recall_class"] == "owl"
    got = metrics.test_metrics(LABELS[:9], LOGITS[:9], TRAIN_COUNTS)  # classes 0 (80) and 1 (75)
    assert got["min_recall"] == pytest.approx(75.0) and got["min_recall_class"] == 1
    assert metrics.zero_recall_classes(LABELS, LOGITS, ["cat", "dog", "owl", "eel"]) == ["owl"]
    assert metrics.zero_recall_classes(LABELS[:9], LOGITS[:9]) == []
    line = metrics.zero_recall_warning(["owl"], "the best checkpoint (epoch 3) on the valid split")
    assert line.startswith("the best checkpoint (epoch 3) on the valid split never predicts class 'owl'")
    assert metrics.zero_recall_warning([], "x") is None
    # the advice never suggests the recipe the run already is (an LA run was told to try LA)
    assert line.endswith("try a rebalancing objective (--objective LA or LDAM-DRW) or --sampler class")
    assert metrics.zero_recall_warning(["owl"], "x", "LA").endswith(
        "try another rebalancing recipe (LDAM-DRW), more epochs or --sampler class")
    assert metrics.zero_recall_warning(["owl"], "x", "LDAM-DRW").endswith(
        "try another rebalancing recipe (LA), more epochs or --sampler class")
    assert metrics.zero_recall_warning(["owl"], "x", "LA-linear").endswith("(LDAM-DRW), more epochs or --sampler class")
    assert metrics.zero_recall_warning(["owl"], "x", "LAS").endswith("(--objective LA or LDAM-DRW) or --sampler class")


def test_mauc_is_the_mean_of_one_vs_rest_auc_over_present_classes():
    probs = probabilities(LOGITS)
    expected = np.mean([skm.roc_auc_score(LABELS == c, probs[:, c]) for c in PRESENT])
    assert metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS)["mauc"] == pytest.approx(100 * expected)


def test_mauc_is_nan_with_a_single_class_present():
    assert math.isnan(metrics.test_metrics(LABELS[:5], LOGITS[:5], TRAIN_COUNTS)["mauc"])


def test_gmean_by_hand():
    # two classes present, recalls 4/5 and 3/4: sqrt(80 * 75) = sqrt(6000) = 77.4597 %
    got = metrics.test_metrics(LABELS[:9], LOGITS[:9], TRAIN_COUNTS)["gmean"]
    assert got == pytest.approx(math.sqrt(80 * 75)) == pytest.approx(77.45967, abs=1e-4)


def test_shot_groups_by_hand():
    got = metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS)
    assert got["many_shot"] == pytest.approx(80.0)  # class 0
    assert got["medium_shot"] == pytest.approx((75.0 + 0.0) / 2)  # classes 1 (count = hi) and 2 (count = lo)
    assert math.isnan(got["few_shot"])  # class 3 is few-shot but has no test sample


def test_shot_thresholds_are_arguments():
    got = metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS, shot_thresholds=(50, 30))
    assert got["many_shot"] == pytest.approx((80.0 + 75.0) / 2)  # 500 and 100 are above 50
    assert math.isnan(got["medium_shot"])  # no class with 30 <= count <= 50
    assert got["few_shot"] == pytest.approx(0.0)  # class 2 (20)


def two_class_logits(confidences_of_class_0):
    """Logits whose softmax is exactly (p, 1 - p): log-probabilities."""
    p = np.array(confidences_of_class_0)
    return np.log(np.stack([p, 1 - p], axis=1))


def test_ece_and_reliability_bins_by_hand():
    # all predict class 0; confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.55 (right); 5 bins of 0.2
    logits = two_class_logits([0.9, 0.9, 0.7, 0.55])
    labels = np.array([0, 1, 0, 0])
    # bin (0.8, 1]: 2 samples, conf 0.9, acc 0.5 -> |0.5 - 0.9| * 2/4 = 0.2
    # bin (0.6, 0.8]: 1 sample, conf 0.7, acc 1  -> 0.3 * 1/4 = 0.075
    # bin (0.4, 0.6]: 1 sample, conf 0.55, acc 1 -> 0.45 * 1/4 = 0.1125;  ECE = 0.3875 = 38.75 %
    assert metrics.test_metrics(labels, logits, [10, 10], n_bins=5)["ece"] == pytest.approx(38.75)
    bins = metrics.reliability_bins(labels, logits, n_bins=5)
    assert list(bins.columns) == ["lo", "hi", "count", "confidence", "accuracy"]
    assert bins["lo"].tolist() == pytest.approx([0, 20, 40, 60, 80])
    assert bins["hi"].tolist() == pytest.approx([20, 40, 60, 80, 100])
    assert bins["count"].tolist() == [0, 0, 1, 1, 2]
    assert bins["confidence"].iloc[2:].tolist() == pytest.approx([55, 70, 90])
    assert bins["accuracy"].iloc[2:].tolist() == pytest.approx([100, 100, 50])
    assert bins[["confidence", "accuracy"]].iloc[:2].isna().all().all()


def test_ece_bins_are_closed_on_the_right():
    # confidence exactly 0.5 (equal logits) lies on an edge: it belongs to the bin that edge closes
    assert metrics.reliability_bins([0], [[0.0, 0.0]], n_bins=2)["count"].tolist() == [1, 0]
    assert metrics.reliability_bins([0], [[0.0, 0.0]], n_bins=4)["count"].tolist() == [0, 1, 0, 0]
    # confidence exactly 1 lands in the last bin; a perfect, fully confident model has ECE 0
    logits = np.array([[0.0, -1e4], [-1e4, 0.0]])
    assert metrics.reliability_bins([0, 1], logits, n_bins=10)["count"].tolist() == [0] * 9 + [2]
    assert metrics.test_metrics([0, 1], logits, [1, 1], n_bins=10)["ece"] == pytest.approx(0.0)


def test_top5_matches_sklearn_when_k_is_below_the_number_of_classes():
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 7, size=40), rng.normal(size=(40, 7))
    expected = 100 * skm.top_k_accuracy_score(labels, logits, k=5, labels=range(7))
    assert 0 < expected < 100
    assert metrics.epoch_metrics(labels, logits)["top5acc"] == pytest.approx(expected)
    assert metrics.test_metrics(labels, logits, [10] * 7)["top5acc"] == pytest.approx(expected)


def test_top5_with_three_classes_is_over_the_available_classes():
    labels = np.array([0, 1, 2])
    logits = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])  # true class ranked last twice
    got = metrics.epoch_metrics(labels, logits)
    assert got["acc"] == pytest.approx(100 / 3)
    assert got["top5acc"] == 100.0


def test_torch_inputs_give_the_same_numbers():
    from_numpy = metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS)
    from_torch = metrics.test_metrics(torch.tensor(LABELS), torch.tensor(LOGITS, dtype=torch.float32),
                                      torch.tensor(TRAIN_COUNTS))
    assert from_torch == pytest.approx(from_numpy, rel=1e-6, nan_ok=True)


def test_confusion_matrix_rows_are_true_columns_are_predicted():
    got = metrics.confusion_matrix(LABELS, PREDS, num_classes=4)
    assert got.tolist() == [
        [4, 1, 0, 0],
        [1, 3, 0, 0],
        [1, 1, 0, 1],  # true 2 predicted 3 lands in row 2, column 3
        [0, 0, 0, 0],
    ]
    assert np.issubdtype(got.dtype, np.integer)


def test_per_class_is_sorted_head_to_tail_and_keeps_absent_classes():
    names = ["cat", "dog", "eel", "fox"]
    train_counts = [20, 500, 20, 100]  # head to tail: dog, fox, cat, eel (tie cat/eel keeps class order)
    table = metrics.per_class(LABELS, LOGITS, names, train_counts)
    assert list(table.columns) == ["class", "train_count", "support", "precision", "recall", "f1", "auc", "ap"]
    assert table["class"].tolist() == ["dog", "fox", "cat", "eel"]
    assert table["train_count"].tolist() == [500, 100, 20, 20]
    assert table["support"].tolist() == [4, 0, 5, 3]
    by_name = table.set_index("class")
    precision, recall, f1, _ = skm.precision_recall_fscore_support(LABELS, PREDS, labels=range(4), zero_division=0)
    for c, name in enumerate(names):
        assert by_name.loc[name, "precision"] == pytest.approx(100 * precision[c])
        assert by_name.loc[name, "recall"] == pytest.approx(100 * recall[c])
        assert by_name.loc[name, "f1"] == pytest.approx(100 * f1[c])
    assert by_name.loc["cat", "precision"] == pytest.approx(100 * 4 / 6)  # predicted 0 six times, 4 right
    assert by_name.loc["cat", "recall"] == pytest.approx(RECALLS[0])
    probs = probabilities(LOGITS)
    for c in PRESENT:
        assert by_name.loc[names[c], "auc"] == pytest.approx(100 * skm.roc_auc_score(LABELS == c, probs[:, c]))
    assert math.isnan(by_name.loc["fox", "auc"])  # class 3 has no test sample
    assert math.isnan(by_name.loc["fox", "ap"])


def test_average_precision_by_hand():
    # p(b) ranks b, a, b, a: precision 1 at recall 1/2, then 2/3 at recall 1: AP = (1 + 2/3) / 2
    p_b = np.array([0.9, 0.8, 0.7, 0.1])
    table = metrics.per_class([1, 0, 1, 0], np.log(np.stack([1 - p_b, p_b], axis=1)), ["a", "b"], [1, 1])
    assert table.set_index("class").loc["b", "ap"] == pytest.approx(100 * 5 / 6)


def test_head_to_tail_order_is_stable():
    assert metrics.head_to_tail_order([5, 50, 5, 20, 50]) == [1, 4, 3, 0, 2]


def test_shot_groups_are_described_with_their_thresholds_and_empty_said():
    text = metrics.describe_shot_groups(TRAIN_COUNTS, (100, 20), ["cat", "dog", "owl", "eel"])
    assert text.splitlines()[0] == ("shot groups by training images (--shot-thresholds 100 20): many (> 100): cat; "
                                    "medium (20-100): dog, owl; few (< 20): eel")
    assert "\n" not in text  # no group empty, no note
    text = metrics.describe_shot_groups(TRAIN_COUNTS, (1000, 600), ["cat", "dog", "owl", "eel"])
    assert "many (> 1000): empty; medium (600-1000): empty; few (< 600): cat, dog, owl, eel" in text
    assert "pick --shot-thresholds" in text.splitlines()[1]
    shown = metrics.format_table(metrics.test_metrics(LABELS, LOGITS, TRAIN_COUNTS, shot_thresholds=(50, 30)))
    assert "medium_shot          empty" in shown and "min_recall_class         2" in shown


def test_a_long_shot_group_is_cut_with_words_not_a_bare_plus():
    names = [f"c{i}" for i in range(12)]
    text = metrics.describe_shot_groups([50] * 12, (100, 20), names)
    assert "medium (20-100): c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 and 2 more;" in text
    assert "medium (20-100): c0, c1, c2, c3, c4, c5, c6;" in metrics.describe_shot_groups([50] * 7, (100, 20), names[:7])
