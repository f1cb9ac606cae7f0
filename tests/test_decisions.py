"""toolkit/decisions.py: thresholds, costs, temperature and the prior, checked by hand on tiny inputs."""
import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from toolkit import decisions
from toolkit.cli import UserError

NAMES = ["0", "1", "2"]


# ---------------------------------------------------------------- the operating point

def test_parse_operating_point():
    point = decisions.parse_operating_point("2:recall=0.9", NAMES)
    assert (point.class_name, point.class_index, point.kind, point.target) == ("2", 2, "recall", 0.9)
    assert decisions.parse_operating_point("a:b:precision=1", ["x", "a:b"]).class_index == 1
    assert str(point) == "2:recall=0.9"


@pytest.mark.parametrize("text, message", [
    ("2 recall 0.9", "write CLASS:recall=R"), ("2:sensitivity=0.9", "write CLASS:recall=R"),
    ("7:recall=0.9", "no class '7'"), ("2:recall=90", r"\(0, 1\]"), ("2:recall=0", r"\(0, 1\]"),
    ("2:precision=-0.5", r"\(0, 1\]"), ("2:recall=high", "no number"), ("2:recall=", "write CLASS"),
])
def test_parse_operating_point_refuses(text, message):
    with pytest.raises(UserError, match=message):
        decisions.parse_operating_point(text, NAMES)


# validation: three images of class 0, four of class 1; p(1) of each, in that order
VALID_LABELS = np.array([0, 0, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.5, 0.7, 0.9, 0.6, 0.4, 0.3])
VALID_PROBS = np.stack([1 - P1, P1], axis=1)


@pytest.mark.parametrize("target, threshold, recall, precision, fpr", [
    (0.5, 0.6, 50.0, 200 / 3, 100 / 3),  # two of four positives: 0.9 and 0.6; 0.7 is a false positive
    (0.75, 0.4, 75.0, 60.0, 200 / 3),    # three: down to 0.4, which lets 0.5 and 0.7 in
    (0.7, 0.4, 75.0, 60.0, 200 / 3),     # 2.8 positives round up to three
    (1.0, 0.3, 100.0, 4 / 6 * 100, 200 / 3),
])
def test_recall_threshold_is_the_largest_that_keeps_the_recall(target, threshold, recall, precision, fpr):
    chosen = decisions.choose_threshold(VALID_LABELS, VALID_PROBS, decisions.OperatingPoint("1", 1, "recall", target))
    assert chosen.value == threshold and chosen.met
    assert (chosen.recall, chosen.precision, chosen.false_positive_rate) == pytest.approx((recall, precision, fpr))


@pytest.mark.parametrize("target, threshold", [
    (1.0, 0.9),    # only 0.9 alone is pure; at 0.7 it is 1 of 2
    (0.6, 0.3),    # at 0.1: 4/7 = 0.571; at 0.3: 4/6 = 0.667
    (2 / 3, 0.3),  # exactly reached counts
    (0.7, 0.9),    # 0.4: 3/5, 0.5: 2/4, 0.6: 2/3, 0.7: 1/2, 0.9: 1/1: only 0.9 reaches 0.7
])
def test_precision_threshold_is_the_smallest_that_reaches_it(target, threshold):
    point = decisions.OperatingPoint("1", 1, "precision", target)
    chosen = decisions.choose_threshold(VALID_LABELS, VALID_PROBS, point)
    assert chosen.value == threshold and chosen.met


def test_unreached_precision_takes_the_best_and_says_so():
    labels, p1 = np.array([1, 0, 1]), np.array([0.5, 0.9, 0.2])  # precision 2/3 at 0.2, 1/2 at 0.5, 0 at 0.9
    chosen = decisions.choose_threshold(labels, np.stack([1 - p1, p1], 1),
                                        decisions.OperatingPoint("1", 1, "precision", 0.9))
    assert chosen.value == 0.2 and not chosen.met
    assert chosen.precision == pytest.approx(200 / 3)


def test_no_validation_image_of_the_class():
    with pytest.raises(UserError, match="no image of '1'"):
        decisions.choose_threshold(np.array([0, 0]), np.array([[0.6, 0.4], [0.3, 0.7]]),
                                   decisions.OperatingPoint("1", 1, "recall", 0.9))


def test_the_rule_decides_the_class_at_the_threshold_else_the_most_probable_other():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.35, 0.45, 0.2]])
    assert decisions.threshold_decisions(probs, 2, 0.3).tolist() == [0, 2, 2, 1]
    # above the argmax's probability: the class is left even where it is the most probable
    assert decisions.threshold_decisions(probs, 2, 0.7).tolist() == [0, 1, 1, 1]
    assert decisions.threshold_decisions(probs, 2, 0.0).tolist() == [2, 2, 2, 2]


def test_class_figures_and_their_intervals():
    labels = np.array([0, 0, 0, 0, 1, 1])
    chosen = np.array([0, 1, 0, 0, 1, 0])
    figures = decisions.class_figures(labels, chosen, 1)
    assert figures == pytest.approx({"recall": 50.0, "precision": 50.0, "false_positive_rate": 25.0})
    with_ci = decisions.class_figures_with_intervals(labels, chosen, 1, resamples=200)
    for name, value in figures.items():
        assert with_ci[f"{name}_ci_low"] <= value <= with_ci[f"{name}_ci_high"]
    assert np.isnan(decisions.class_figures(labels, np.zeros(6, int), 1)["precision"])


def test_decision_scores_are_those_of_the_decisions():
    scores = decisions.decision_scores(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3, resamples=50)
    assert scores["acc"] == pytest.approx(50.0)
    assert scores["bacc"] == pytest.approx(100 / 2 / 3 + 100 / 3)  # recalls 1/2, 1, 0
    assert scores["acc_ci_low"] <= 50.0 <= scores["acc_ci_high"]


# ---------------------------------------------------------------- costs

def write(path, text):
    path.write_text(text)
    return path


def test_cost_matrix_is_read_in_the_runs_class_order(tmp_path):
    path = write(tmp_path / "costs.csv", "true,b,a\nb,0,20\na,1,0\n")  # missing a true b costs 20
    costs = decisions.read_cost_matrix(path, ["a", "b"])
    assert costs.tolist() == [[0, 1], [20, 0]]


@pytest.mark.parametrize("text, message", [
    ("true,a,b,c\na,0,1,1\nb,1,0,1\nc,1,1,0\n", "unknown: c"),
    ("true,a\na,0\n", "missing: b"),
    ("true,a,b\na,0,1\nb,-1,0\n", "true b decided as a is negative"),
    ("true,a,b\na,0,x\nb,1,0\n", "'x'.* is no number"),
    ("true,a,b\na,0,1\na,1,0\n", "named twice"),
])
def test_bad_cost_matrix(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        decisions.read_cost_matrix(write(tmp_path / "costs.csv", text), ["a", "b"])


def test_missing_cost_file(tmp_path):
    with pytest.raises(UserError, match="cannot read the cost matrix"):
        decisions.read_cost_matrix(tmp_path / "none.csv", ["a", "b"])


def test_bayes_decision_by_hand():
    costs = np.array([[0.0, 1.0], [20.0, 0.0]])  # a missed 1 costs 20, a false alarm 1
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.95, 0.05]])
    # expected cost of deciding 0 = 20 p1, of deciding 1 = p0: 2 vs 0.9, 8 vs 0.6, 0.2 vs 0.99, 1 vs 0.95
    assert decisions.bayes_decisions(probs, costs).tolist() == [1, 1, 0, 1]
    assert decisions.bayes_decisions(probs, 1 - np.eye(2)).tolist() == [0, 0, 0, 0]  # 0-1 costs: the argmax


def test_mean_costs_by_hand():
    costs = np.array([[0.0, 1.0], [20.0, 0.0]])
    found = decisions.mean_costs(np.array([0, 1, 1]), np.array([1, 1, 0]), np.array([0, 0, 0]), costs,
                                 resamples=100)
    assert found["cost"] == pytest.approx(7.0) and found["argmax_cost"] == pytest.approx(40 / 3)
    assert found["cost_difference"] == pytest.approx(7 - 40 / 3)
    assert found["cost_ci_low"] <= 7.0 <= found["cost_ci_high"]


# ---------------------------------------------------------------- temperature

def generated(n=20000, k=4, seed=0):
    """Logits z whose softmax is the true posterior, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    p = softmax(z, axis=1)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return labels, z


def test_temperature_undoes_overconfidence():
    labels, z = generated()
    temperature = decisions.fit_temperature(labels, 3 * z)  # logits three times too sharp
    assert temperature == pytest.approx(3.0, rel=0.05)
    figures = decisions.calibration_figures(labels, 3 * z, temperature)
    assert figures["nll_after"] < figures["nll_before"] and figures["ece_after"] < figures["ece_before"]
    assert figures["ece_after"] < 1.5


def test_fitted_temperature_is_the_nll_stationary_point():
    # d NLL / d(1/T) = 0: the mean logit of the true class equals its expected value under softmax(z / T)
    labels, z = generated(n=500, k=3, seed=1)
    temperature = decisions.fit_temperature(labels, z)
    p = decisions.calibrated(z, temperature)
    assert z[np.arange(len(z)), labels].mean() == pytest.approx((p * z).sum(axis=1).mean(), abs=1e-4)


# ---------------------------------------------------------------- a shifted prior

def gaussian_posteriors(prior, train_prior, n=20000, seed=0):
    """Labels drawn from `prior`, x ~ N(2 * label, 1), and the exact posteriors under `train_prior`."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(prior), size=n, p=prior)
    x = rng.normal(2.0 * labels, 1.0)
    joint = norm.pdf(x[:, None], loc=2.0 * np.arange(len(prior))) * np.asarray(train_prior)
    return labels, joint / joint.sum(axis=1, keepdims=True)


TRAIN_PRIOR = np.array([0.6, 0.3, 0.1])


@pytest.mark.parametrize("shifted", [[0.1, 0.3, 0.6], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
def test_em_recovers_a_known_prior(shifted):
    labels, posteriors = gaussian_posteriors(shifted, TRAIN_PRIOR)
    prior, adapted, iterations = decisions.estimate_prior(posteriors, TRAIN_PRIOR)
    drawn = np.bincount(labels, minlength=3) / len(labels)
    assert prior == pytest.approx(drawn, abs=0.02)  # the shares actually drawn, within two points
    assert prior.sum() == pytest.approx(1.0)
    # the paper's fixed point (eqs. 2.4-2.6): the prior is the mean of the posteriors re-weighted to it
    assert adapted.mean(axis=0) == pytest.approx(prior, abs=1e-6)
    assert decisions.reweighted(posteriors, TRAIN_PRIOR, prior) == pytest.approx(adapted)


def test_adaptation_helps_the_accuracy_on_a_shifted_set():
    labels, posteriors = gaussian_posteriors([0.1, 0.3, 0.6], TRAIN_PRIOR)
    _, adapted, _ = decisions.estimate_prior(posteriors, TRAIN_PRIOR)
    assert (adapted.argmax(1) == labels).mean() > (posteriors.argmax(1) == labels).mean() + 0.05


def test_reweighting_by_hand():
    # p = (0.5, 0.5) under a training prior (0.8, 0.2), the new one (0.5, 0.5): weights 0.625, 2.5
    assert decisions.reweighted(np.array([[0.5, 0.5]]), [0.8, 0.2], [0.5, 0.5])[0] == pytest.approx([0.2, 0.8])
