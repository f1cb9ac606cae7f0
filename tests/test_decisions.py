"""toolkit/decisions.py: thresholds, costs, temperature and the prior, checked by hand on tiny inputs."""
import re

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from toolkit import chosen_decisions, decisions
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


def test_the_argmax_on_valid_is_kept_beside_the_chosen_threshold():
    """The argmax decides 1 for p(1) = 0.9, 0.7, 0.6 (0.5 ties to class 0): two of four positives
    and one of three negatives; written so a user sees when the argmax meets the target already."""
    logits = np.log(VALID_PROBS)
    chosen = chosen_decisions.choose(VALID_LABELS, logits, ["0", "1"], decisions.OperatingPoint("1", 1, "recall", 0.5))
    argmax = chosen.chosen_files[chosen_decisions.OPERATING_POINT_FILE]["valid_argmax"]
    assert (argmax["recall"], argmax["precision"], argmax["false_positive_rate"]) == \
        pytest.approx((50.0, 200 / 3, 100 / 3))


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
    scores = decisions.decision_scores(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"], resamples=50)
    assert scores["acc"] == pytest.approx(50.0)
    assert scores["bacc"] == pytest.approx(100 / 2 / 3 + 100 / 3)  # recalls 1/2, 1, 0
    assert scores["acc_ci_low"] <= 50.0 <= scores["acc_ci_high"]
    assert (scores["worst_recall"], scores["worst_class"]) == (0.0, "c")


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


def test_a_temperature_at_the_end_of_its_range_is_warned_of():
    """Every image labelled 0, logits 50 in favour of class 1: the NLL falls as T grows without
    end, so the search stops at the top of its range, and says so."""
    labels, logits = np.zeros(20, dtype=int), np.tile([0.0, 50.0], (20, 1))
    with pytest.warns(UserWarning, match="the end of the range searched"):
        temperature = decisions.fit_temperature(labels, logits)
    assert temperature == pytest.approx(decisions.TEMPERATURE_RANGE[1], rel=1e-3)


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


# ---------------------------------------------------------------- 2_test.py: chosen on valid, judged on test

import json  # noqa: E402
import shutil  # noqa: E402

import pandas as pd  # noqa: E402

from conftest import copy_untested  # noqa: E402
from toolkit import data, metrics  # noqa: E402
from toolkit.images import decode_image  # noqa: E402
from toolkit.predictor import Predictor  # noqa: E402


@pytest.fixture
def own_run(trained_run, tmp_path):
    """A copy of the shared run and its dataset, to write into and to change."""
    copy_untested(trained_run.logs, tmp_path / "logs")
    shutil.copytree(trained_run.data, tmp_path / "a_datasets")
    run_dir = tmp_path / "logs" / trained_run.run_dir.relative_to(trained_run.logs)
    return SimpleNamespace(run_dir=run_dir, data=tmp_path / "a_datasets",
                           args=["--run", run_dir, "--data-root", tmp_path / "a_datasets", "--no-progress",
                                 "--precision", "fp32", "--bootstrap", "1000"])


from types import SimpleNamespace  # noqa: E402


def split_logits(run_dir, dataset, split):
    predictor = Predictor.of_run(run_dir, device="cpu", precision="fp32")
    image_set = data.load_images(data.scan_split(dataset, split, predictor.record.class_names),
                                 predictor.record.height, predictor.record.width, predictor.device, 0, 1, False)
    labels, logits = predictor.predict(image_set, 64, 1, False)
    return labels.numpy(), logits.double().numpy()


def test_operating_point_is_chosen_on_valid_and_applied_on_test(own_run, run):
    code, out, err = run("2_test", *own_run.args, "--operating-point", "gamma:recall=1")
    assert code == 0, err
    folder = own_run.run_dir / "operating-point-gamma-recall-1"
    chosen = json.loads((folder / "operating_point.json").read_text())
    labels, logits = split_logits(own_run.run_dir, own_run.data / "tiny", "valid")
    expected = decisions.choose_threshold(labels, softmax(logits, axis=1),
                                          decisions.OperatingPoint("gamma", 2, "recall", 1.0))
    assert chosen["threshold"] == pytest.approx(expected.value, rel=1e-5) and chosen["temperature"] is None
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns[:5]) == ["path", "true", "predicted", "decision", "probability"]
    probs = np.stack([predictions.apply(lambda r: next(r[f"top{k}_prob"] for k in (1, 2, 3)
                                                      if r[f"top{k}"] == name), axis=1)
                      for name in ("alpha", "beta", "gamma")], axis=1) / 100
    names = np.array(["alpha", "beta", "gamma"])
    assert (predictions["decision"] == names[decisions.threshold_decisions(probs, 2, chosen["threshold"])]).all()
    row = pd.read_csv(folder / "decision_metrics.csv").iloc[0]
    is_gamma, decided_gamma = predictions["true"] == "gamma", predictions["decision"] == "gamma"
    assert row["recall"] == pytest.approx(100 * (is_gamma & decided_gamma).sum() / is_gamma.sum(), rel=1e-5)
    assert row["false_positive_rate"] == pytest.approx(100 * (~is_gamma & decided_gamma).sum() / (~is_gamma).sum(),
                                                       rel=1e-5)
    assert "threshold" in out and "argmax" in out
    argmax = decisions.class_figures(labels, logits.argmax(axis=1), 2)
    assert chosen["valid_argmax"] == pytest.approx(argmax, nan_ok=True)
    assert f"the argmax there: recall {metrics.format_value(argmax['recall'])}" in out
    assert {"pr_curves.svg", "decision_confusion_matrix.csv", "test_metrics.csv"} <= {p.name for p in folder.iterdir()}
    assert not (own_run.run_dir / "test_metrics.csv").exists()  # the run's own test is not this one


def test_permuted_test_labels_give_the_same_threshold(own_run, run):
    code, _, err = run("2_test", *own_run.args, "--operating-point", "beta:precision=0.5")
    assert code == 0, err
    folder = own_run.run_dir / "operating-point-beta-precision-0.5"
    first = json.loads((folder / "operating_point.json").read_text())
    test = own_run.data / "tiny" / "test"
    images = sorted(test.rglob("*.png"))
    moved = np.random.default_rng(0).permutation(len(images))
    for i, path in enumerate(images):  # every test image into another class's folder, at random
        path.rename(test / ["alpha", "beta", "gamma"][moved[i] % 3] / f"permuted{i}.png")
    code, _, err = run("2_test", *own_run.args, "--operating-point", "beta:precision=0.5")
    assert code == 0, err
    again = next(p for p in folder.iterdir() if p.name.startswith("data-"))  # other test data: a folder below
    assert json.loads((again / "operating_point.json").read_text()) == first


def test_costs_decide_by_least_expected_cost(own_run, run, tmp_path):
    costs = write(tmp_path / "missed_gamma.csv", "true,alpha,beta,gamma\nalpha,0,1,1\nbeta,1,0,1\ngamma,20,20,0\n")
    code, out, err = run("2_test", *own_run.args, "--costs", costs)
    assert code == 0, err
    folder = own_run.run_dir / "costs-missed_gamma"
    predictions = pd.read_csv(folder / "predictions.csv")
    matrix = pd.read_csv(costs, index_col=0)
    mean_cost = np.mean([matrix.loc[t, d] for t, d in zip(predictions["true"], predictions["decision"])])
    argmax_cost = np.mean([matrix.loc[t, d] for t, d in zip(predictions["true"], predictions["predicted"])])
    row = pd.read_csv(folder / "decision_metrics.csv").iloc[0]
    assert (row["cost"], row["argmax_cost"]) == pytest.approx((mean_cost, argmax_cost), rel=1e-5)
    assert row["cost_ci_low"] <= row["cost"] <= row["cost_ci_high"]
    assert "mean cost per image" in out


def test_calibrate_fits_the_temperature_on_valid(own_run, run):
    code, out, err = run("2_test", *own_run.args, "--calibrate", "temperature")
    assert code == 0, err
    saved = json.loads((own_run.run_dir / "calibrated" / "calibration.json").read_text())
    labels, logits = split_logits(own_run.run_dir, own_run.data / "tiny", "valid")
    assert saved["temperature"] == pytest.approx(decisions.fit_temperature(labels, logits), rel=1e-3)
    assert saved["test"]["ece_before"] >= 0 and "nll_after" in saved["valid"]
    svg = (own_run.run_dir / "calibrated" / "reliability.svg").read_text()
    assert "before (ECE" in svg and "after, temperature" in svg


@pytest.mark.parametrize("options, message", [
    (["--operating-point", "delta:recall=0.9"], "no class 'delta'"),
    (["--operating-point", "gamma:recall=1.5"], r"\(0, 1\]"),
    (["--operating-point", "gamma=0.9"], "CLASS:recall=R"),
    (["--operating-point", "gamma:recall=0.9", "--costs", "costs.csv"], "two decision rules"),
    (["--costs", "costs.csv"], "unknown: delta"),
    (["--costs", "nowhere.csv"], "no such file"),
    (["--calibrate", "temperature", "--logit-adjust", "1"], "leave out --logit-adjust"),
])
def test_bad_decision_input_writes_nothing(own_run, run, tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "costs.csv", "true,alpha,beta,delta\nalpha,0,1,1\nbeta,1,0,1\ndelta,1,1,0\n")
    before = sorted(p.name for p in own_run.run_dir.iterdir())
    code, out, err = run("2_test", *own_run.args, *options)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    assert re.search(message, err)
    assert sorted(p.name for p in own_run.run_dir.iterdir()) == before


def test_no_valid_split_to_choose_on(own_run, run):
    shutil.rmtree(own_run.data / "tiny" / "valid")
    code, _, err = run("2_test", *own_run.args, "--operating-point", "gamma:recall=0.9")
    assert code == 2 and "needs a valid split" in err


# ---------------------------------------------------------------- 5_predict.py and the ONNX export apply it

def test_5_predict_applies_the_saved_operating_point(own_run, run, tmp_path):
    code, _, err = run("2_test", *own_run.args, "--operating-point", "gamma:recall=1", "--calibrate", "temperature")
    assert code == 0, err
    folder = own_run.run_dir / "calibrated-operating-point-gamma-recall-1"
    output = tmp_path / "predictions.csv"
    code, out, err = run("5_predict", "--run", own_run.run_dir, own_run.data / "tiny" / "test", "--operating-point",
                         folder, "--output", output, "--no-progress")
    assert code == 0, err
    tested, predicted = pd.read_csv(folder / "predictions.csv"), pd.read_csv(output)
    predicted["path"] = [p.split("tiny/", 1)[1] for p in predicted["path"]]
    both = tested.merge(predicted, on="path", suffixes=("_tested", "_predicted"))
    assert len(both) == 4 and (both["decision_tested"] == both["decision_predicted"]).all()
    # the calibrated probabilities, as 2_test.py wrote them
    assert np.allclose(both["probability_tested"], both["probability_predicted"], atol=1e-3)
    # --calibrate beside a calibrated point needs no RUN/calibrated/: the point carries its temperature
    assert not (own_run.run_dir / "calibrated").exists()
    code, out, err = run("5_predict", "--run", own_run.run_dir, own_run.data / "tiny" / "test", "--operating-point",
                         folder, "--calibrate", "--output", output, "--no-progress")
    assert code == 0, err
    assert (pd.read_csv(output)["decision"].to_numpy() == predicted["decision"].to_numpy()).all()


def test_5_predict_adapts_the_prior(own_run, run, tmp_path):
    output = tmp_path / "out.csv"
    code, out, err = run("5_predict", "--run", own_run.run_dir, own_run.data / "tiny" / "test", "--adapt-prior",
                         "--output", output, "--no-progress")
    assert code == 0, err
    prior = pd.read_csv(tmp_path / "out_prior.csv")
    assert list(prior["class"]) == ["alpha", "beta", "gamma"]
    assert prior["training_prior"].tolist() == pytest.approx([100 * 12 / 23, 100 * 7 / 23, 100 * 4 / 23], rel=1e-5)
    assert prior["estimated_prior"].sum() == pytest.approx(100, rel=1e-5)
    predicted = pd.read_csv(output)
    # the adapted posteriors' mean is the estimated prior (the EM's fixed point)
    probs = np.stack([predicted.apply(lambda r: next(r[f"top{k}_prob"] for k in (1, 2, 3) if r[f"top{k}"] == name),
                                      axis=1) for name in prior["class"]], axis=1)
    assert probs.mean(axis=0) == pytest.approx(prior["estimated_prior"].to_numpy(), abs=1e-3)
    assert "estimated from these images by EM" in out


@pytest.mark.parametrize("options, message", [
    (["--operating-point", "."], "holds no operating_point.json"),
    (["--calibrate"], "no temperature fit for this run"),
    (["--costs", "none.csv"], "cannot read the cost matrix"),
    (["--adapt-prior", "--export", "onnx"], "not for --export"),
    (["--operating-point", ".", "--costs", "none.csv"], "two decision rules"),
])
def test_5_predict_bad_decision_input(own_run, run, tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run("5_predict", "--run", own_run.run_dir, own_run.data / "tiny" / "test", *options,
                       "--output", tmp_path / "p.csv", "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def documented_decide():
    """The `decide` function docs/decisions.md gives, run as written."""
    text = (REPO / "docs" / "decisions.md").read_text()
    block = text.split("<!-- decide: the test runs this block -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(block, namespace)
    return namespace["decide"]


from conftest import REPO  # noqa: E402


@pytest.mark.parametrize("rule", ["operating point", "costs"])
def test_the_documented_onnx_decision_is_pytorchs(own_run, run, tmp_path, rule):
    import onnxruntime
    import torch

    if rule == "operating point":
        code, _, err = run("2_test", *own_run.args, "--operating-point", "beta:recall=1", "--calibrate", "temperature")
        options = ["--operating-point", own_run.run_dir / "calibrated-operating-point-beta-recall-1"]
    else:
        code, _, err = run("2_test", *own_run.args, "--calibrate", "temperature")
        costs = write(tmp_path / "c.csv", "true,alpha,beta,gamma\nalpha,0,1,1\nbeta,5,0,5\ngamma,20,20,0\n")
        options = ["--costs", costs, "--calibrate"]
    assert code == 0, err
    code, _, err = run("5_predict", "--run", own_run.run_dir, "--export", "onnx", *options, "--no-progress")
    assert code == 0, err
    described = json.loads((own_run.run_dir / "classes.json").read_text())
    assert described["decision"]["temperature"] != 1.0
    # the images: the test split's and blends of them, so that some lie near the threshold or a boundary
    predictor = Predictor.of_run(own_run.run_dir, device="cpu", precision="fp32")
    test = torch.stack([torch.from_numpy(decode_image(p, 16, 16)).permute(2, 0, 1)
                        for p in sorted((own_run.data / "tiny" / "test").rglob("*.png"))]).float()
    weights = torch.linspace(0, 1, 16)[:, None, None, None, None]
    images = (weights * test[None] + (1 - weights) * test.roll(1, 0)[None]).reshape(-1, 3, 16, 16).round().byte()
    session = onnxruntime.InferenceSession(str(own_run.run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"images": images.float().numpy()})[0]
    decided_onnx = documented_decide()(probabilities, described["decision"]["rule"])
    if rule == "operating point":
        decision = chosen_decisions.saved_operating_point(options[1], predictor.record.class_names)
    else:
        decision = decisions.Decision(tuple(predictor.record.class_names), chosen_decisions.saved_temperature(
            own_run.run_dir), costs=decisions.read_cost_matrix(costs, predictor.record.class_names))
    probs = decision.probabilities(predictor.logits(images).double().numpy())
    assert np.abs(probabilities - probs).max() < 1e-4  # the temperature is inside model.onnx
    assert (decided_onnx == decision.decide(probs)).all()
    assert len(set(decided_onnx.tolist())) >= 2  # not one class for every image: the rule is exercised


def test_a_cost_rule_dearer_than_the_argmax_on_valid_is_warned_of():
    """30 images of class 0 at p = (0.9, 0.1) and one of class 1 at (0.99, 0.01), a missed 1 costing
    20: the rule decides 1 for every class-0 image (0.9 < 0.1 x 20) and still misses the 1: mean
    cost (30 + 20) / 31 against the argmax's 20 / 31."""
    labels = np.array([0] * 30 + [1])
    logits = np.log(np.array([[0.9, 0.1]] * 30 + [[0.99, 0.01]]))
    costs = np.array([[0.0, 1.0], [20.0, 0.0]])
    with pytest.warns(UserWarning, match="costs more per image than the argmax"):
        chosen = chosen_decisions.choose(labels, logits, ["ok", "defect"], costs=costs, costs_path="c.csv")
    valid = chosen.chosen_files[chosen_decisions.COSTS_FILE]["valid"]
    assert valid["cost"] == pytest.approx(50 / 31) and valid["argmax_cost"] == pytest.approx(20 / 31)
