"""The decision a user deploys, from predicted probabilities: an operating point (a threshold on
one class's probability, chosen on validation), a cost matrix (the Bayes decision), one
temperature (calibration fit on validation) and a shifted class prior (EM on the predicted
images). Pure rules over numpy arrays, no files but the cost matrix a user writes; 2_test.py
chooses and judges them, 5_predict.py and the ONNX export apply them.

Probabilities are float arrays (N, K) whose rows sum to 1; labels are ints (N,); rates are in
percent as in metrics.py.
"""
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from toolkit import metrics
from toolkit.cli import UserError

# ---------------------------------------------------------------- the operating point

OPERATING_POINT = re.compile(r"^(?P<name>.+):(?P<kind>recall|precision)=(?P<target>[^=]+)$")


@dataclass(frozen=True)
class OperatingPoint:
    """CLASS:recall=R or CLASS:precision=P, with the class's index among the run's classes."""
    class_name: str
    class_index: int
    kind: str  # "recall" or "precision"
    target: float  # in (0, 1]

    def __str__(self):
        return f"{self.class_name}:{self.kind}={self.target:g}"


def parse_operating_point(text: str, class_names) -> OperatingPoint:
    """`CLASS:recall=R` or `CLASS:precision=P` (0 < R, P <= 1) of one of `class_names`."""
    found = OPERATING_POINT.match(text.strip())
    if not found:
        raise UserError(f"--operating-point {text!r}: write CLASS:recall=R or CLASS:precision=P, "
                        f"e.g. {class_names[-1]}:recall=0.9")
    name, kind = found["name"], found["kind"]
    if name not in class_names:
        raise UserError(f"--operating-point {text!r}: no class {name!r}; the run's classes are "
                        f"{', '.join(class_names)}")
    try:
        target = float(found["target"])
    except ValueError:
        raise UserError(f"--operating-point {text!r}: {found['target']!r} is no number; the {kind} is a "
                        f"fraction in (0, 1], e.g. 0.9") from None
    if not 0 < target <= 1:
        raise UserError(f"--operating-point {text!r}: the {kind} must lie in (0, 1] (a fraction: 0.9, not 90)")
    return OperatingPoint(name, list(class_names).index(name), kind, target)


@dataclass(frozen=True)
class Threshold:
    """A chosen threshold: `value`, whether the target was reached on validation (`met`), and the
    validation recall, precision and false-positive rate (%) of the class under the rule."""
    value: float
    met: bool
    recall: float
    precision: float
    false_positive_rate: float


def choose_threshold(labels, probs, point: OperatingPoint) -> Threshold:
    """The threshold t on p(CLASS), chosen on the labels and probabilities given (VALIDATION):
    recall=R: the largest t whose recall of CLASS is at least R; precision=P: the smallest t whose
    precision is at least P, else (none reaches P) the t of the highest precision, met=False."""
    labels, scores = np.asarray(labels), np.asarray(probs, dtype=np.float64)[:, point.class_index]
    positive = labels == point.class_index
    if not positive.any():
        raise UserError(f"the validation split has no image of {point.class_name!r} to choose a threshold on")
    if point.kind == "recall":
        # recall(t) = #{positives with score >= t} / #positives steps down at the positives' scores: the
        # largest t that keeps k = ceil(R n) positives is the k-th largest positive score
        needed = math.ceil(point.target * positive.sum() - 1e-9)
        value, met = float(np.sort(scores[positive])[::-1][needed - 1]), True
    else:
        candidates = np.unique(scores)  # precision changes only at a score some image has
        decided = len(scores) - np.searchsorted(np.sort(scores), candidates, side="left")  # images with score >= t
        hits = positive.sum() - np.searchsorted(np.sort(scores[positive]), candidates, side="left")
        precisions = hits / decided
        reached = np.flatnonzero(precisions >= point.target - 1e-12)
        met = len(reached) > 0
        value = float(candidates[reached[0]] if met else candidates[np.argmax(precisions)])
    figures = class_figures(labels, threshold_decisions(probs, point.class_index, value), point.class_index)
    return Threshold(value, met, **figures)


def threshold_decisions(probs, class_index: int, threshold: float) -> np.ndarray:
    """The rule: CLASS when p(CLASS) >= threshold, else the most probable other class."""
    probs = np.asarray(probs, dtype=np.float64)
    others = probs.copy()
    others[:, class_index] = -np.inf
    return np.where(probs[:, class_index] >= threshold, class_index, others.argmax(axis=1))


def class_figures(labels, decisions, class_index: int) -> dict:
    """recall, precision and false-positive rate (%) of one class under `decisions`; precision is
    NaN when the class is never decided, the false-positive rate NaN when every image is the class."""
    labels, decisions = np.asarray(labels), np.asarray(decisions)
    positive, decided = labels == class_index, decisions == class_index
    hits = (positive & decided).sum()
    return {"recall": 100.0 * hits / positive.sum() if positive.any() else math.nan,
            "precision": 100.0 * hits / decided.sum() if decided.any() else math.nan,
            "false_positive_rate": 100.0 * (decided & ~positive).sum() / (~positive).sum()
            if (~positive).any() else math.nan}


def class_figures_with_intervals(labels, decisions, class_index: int, resamples=1000, seed=0,
                                 confidence=0.95) -> dict:
    """class_figures with 95% stratified bootstrap intervals over the images (as metrics.py's)."""
    labels, decisions = np.asarray(labels), np.asarray(decisions)
    figures = class_figures(labels, decisions, class_index)
    if not resamples:
        return figures
    draws = metrics.stratified_indices(labels, resamples, np.random.default_rng(seed))
    sampled = [class_figures(labels[row], decisions[row], class_index) for row in draws]
    return metrics.with_intervals(figures, _percentiles(pd.DataFrame(sampled), confidence))


def _percentiles(samples: pd.DataFrame, confidence: float) -> dict:
    tail = 100.0 * (1 - confidence) / 2
    intervals = {}
    for name in samples:
        values = samples[name].dropna()
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan)
        intervals.update({f"{name}_ci_low": float(low), f"{name}_ci_high": float(high)})
    return intervals


def decision_scores(labels, decisions, class_names, resamples=1000) -> dict:
    """acc, bacc and macro F1 (%) of `decisions` with their bootstrap intervals, as metrics.py
    computes them for an argmax (the decisions given as one-hot scores), and the worst class's
    recall with its name (over the classes present in the labels)."""
    labels, decisions = np.asarray(labels), np.asarray(decisions)
    one_hot = np.eye(len(class_names))[decisions]
    full = metrics.test_metrics(labels, one_hot, np.ones(len(class_names)), class_names=list(class_names))
    scores = {name: full[name] for name in metrics.BOOTSTRAPPED}
    if resamples:
        scores = metrics.with_intervals(scores, metrics.bootstrap_intervals(labels, one_hot, resamples))
    return {**scores, "worst_recall": full["min_recall"], "worst_class": full["min_recall_class"]}


# ---------------------------------------------------------------- costs: the Bayes decision

def read_cost_matrix(path: Path, class_names) -> np.ndarray:
    """A C x C cost matrix from CSV: header and first column are class names, row = true class,
    column = decided class, every cost a non-negative number; returned in the run's class order."""
    path = Path(path)
    try:
        table = pd.read_csv(path, index_col=0, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"cannot read the cost matrix {path} ({e}); write a CSV with the class names as header "
                        f"and first column") from None
    table.index, table.columns = table.index.astype(str).str.strip(), table.columns.astype(str).str.strip()
    names = [str(n) for n in class_names]
    for axis, found in (("rows (true class)", table.index), ("columns (decided class)", table.columns)):
        if sorted(found) != sorted(names) or len(set(found)) != len(found):
            unknown, missing = sorted(set(found) - set(names)), sorted(set(names) - set(found))
            raise UserError(f"{path}: its {axis} must name each of the run's {len(names)} classes once"
                            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                            + (f"; missing: {', '.join(missing)}" if missing else "")
                            + ("; some named twice" if len(set(found)) != len(found) else ""))
    ordered = table.loc[names, names]
    costs = ordered.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(costs).any():
        row, col = np.argwhere(np.isnan(costs))[0]
        raise UserError(f"{path}: the cost of true {names[row]} decided as {names[col]} "
                        f"({ordered.iloc[row, col]!r}) is no number")
    if (costs < 0).any():
        row, col = np.argwhere(costs < 0)[0]
        raise UserError(f"{path}: the cost of true {names[row]} decided as {names[col]} is negative "
                        f"({costs[row, col]:g}); costs are non-negative")
    return costs


def bayes_decisions(probs, costs) -> np.ndarray:
    """argmin_j sum_i p(i|x) C[i, j]: the decision of least expected cost (ties to the first class)."""
    return (np.asarray(probs, dtype=np.float64) @ np.asarray(costs, dtype=np.float64)).argmin(axis=1)


def mean_costs(labels, decisions, baseline, costs, resamples=1000, seed=0, confidence=0.95) -> dict:
    """Mean cost per image of `decisions` and of `baseline` (the argmax) on the same images, and their
    difference, each with a stratified bootstrap interval (the same resamples for all three)."""
    labels = np.asarray(labels)
    per_image = {"cost": costs[labels, decisions], "argmax_cost": costs[labels, baseline]}
    per_image["cost_difference"] = per_image["cost"] - per_image["argmax_cost"]
    found = {name: float(values.mean()) for name, values in per_image.items()}
    if not resamples:
        return found
    draws = metrics.stratified_indices(labels, resamples, np.random.default_rng(seed))
    sampled = pd.DataFrame({name: values[draws].mean(axis=1) for name, values in per_image.items()})
    return metrics.with_intervals(found, _percentiles(sampled, confidence))


# ---------------------------------------------------------------- calibration: one temperature

TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(labels, logits) -> float:
    """The temperature T of least negative log-likelihood of softmax(logits / T) on the labels
    given (VALIDATION) (Guo et al., ICML 2017). The NLL is convex in 1/T, so a bounded scalar
    search finds the one minimum."""
    labels, logits = np.asarray(labels), np.asarray(logits, dtype=np.float64)

    def nll_at(inverse):
        return -log_softmax(logits * inverse, axis=1)[np.arange(len(labels)), labels].mean()
    low, high = TEMPERATURE_RANGE
    found = minimize_scalar(nll_at, bounds=(1 / high, 1 / low), method="bounded", options={"xatol": 1e-6})
    temperature = float(1 / found.x)
    if not low * 1.01 < temperature < high * 0.99:  # the NLL still falls beyond the range searched
        warnings.warn(f"the temperature stopped at {temperature:.3g}, the end of the range searched "
                      f"({low:g}-{high:g}): the model's probabilities are too far off to calibrate by one "
                      f"temperature (a model that has barely trained, or one that predicts a class regardless); "
                      f"train it first", stacklevel=2)
    return temperature


def calibrated(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T): probabilities, calibrated when T is the fitted temperature."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def calibration_figures(labels, logits, temperature: float) -> dict:
    """ECE (%) and NLL (nats) before and after dividing the logits by the temperature."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.arange(logits.shape[1])

    def figures(scaled):
        return (metrics.expected_calibration_error(metrics.reliability_bins(labels, scaled)),
                skm.log_loss(labels, softmax(scaled, axis=1), labels=classes))
    (ece, nll), (ece_after, nll_after) = figures(logits), figures(logits / temperature)
    return {"temperature": temperature, "ece_before": ece, "ece_after": ece_after,
            "nll_before": nll, "nll_after": nll_after}


# ---------------------------------------------------------------- a shifted prior: EM (Saerens et al. 2002)

def reweighted(probs, train_prior, new_prior) -> np.ndarray:
    """Posteriors under another class prior: p'(i|x) proportional to p(i|x) new(i) / train(i)
    (Saerens, Latinne & Decaestecker, Neural Computation 2002, eq. 2.3)."""
    weighted = np.asarray(probs, dtype=np.float64) * (np.asarray(new_prior) / np.asarray(train_prior))
    return weighted / weighted.sum(axis=1, keepdims=True)


def estimate_prior(probs, train_prior, tolerance=1e-8, max_iterations=10_000) -> tuple:
    """The class prior of the images whose posteriors `probs` (under `train_prior`) are given, by
    EM (Saerens et al. 2002, eqs. 2.4-2.6): E, the posteriors re-weighted to the current prior;
    M, the prior is their mean. Starts at the training prior; stops when no share moves by more
    than `tolerance`. Returns (prior, re-weighted posteriors, iterations). Calibrated
    probabilities make it work (Alexandari et al., ICML 2020)."""
    probs = np.asarray(probs, dtype=np.float64)
    train_prior = np.asarray(train_prior, dtype=np.float64) / np.sum(train_prior)
    prior = train_prior
    for iteration in range(1, max_iterations + 1):
        posteriors = reweighted(probs, train_prior, prior)
        new_prior = posteriors.mean(axis=0)
        moved = np.abs(new_prior - prior).max()
        prior = new_prior
        if moved < tolerance:
            break
    return prior, reweighted(probs, train_prior, prior), iteration


# ---------------------------------------------------------------- precision-recall curves

def precision_recall_curves(labels, probs) -> list:
    """Per class: (recall %, precision %) arrays of scikit-learn's curve of p(class), or None when
    the labels hold no image of the class."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    curves = []
    for c in range(probs.shape[1]):
        if not (labels == c).any():
            curves.append(None)
            continue
        precision, recall, _ = skm.precision_recall_curve(labels == c, probs[:, c])
        curves.append((100.0 * recall, 100.0 * precision))
    return curves


# ---------------------------------------------------------------- what a deployment applies

@dataclass(frozen=True, eq=False)  # eq=False: a cost matrix (an array) has no truth value to compare by
class Decision:
    """The temperature and the rule a deployment applies to a model's logits: a threshold on one
    class's probability (`threshold` = (class index, t)), the Bayes decision of a cost matrix
    (`costs`, K x K), or else the argmax."""
    class_names: tuple
    temperature: float = 1.0
    threshold: tuple = None
    costs: np.ndarray = None

    def probabilities(self, logits) -> np.ndarray:
        return calibrated(logits, self.temperature)

    def decide(self, probs) -> np.ndarray:
        if self.threshold is not None:
            return threshold_decisions(probs, *self.threshold)
        if self.costs is not None:
            return bayes_decisions(probs, self.costs)
        return np.asarray(probs).argmax(axis=1)

    def description(self) -> dict:
        """The temperature and the rule, as classes.json holds them."""
        if self.threshold is not None:
            index, value = self.threshold
            rule = {"kind": "threshold", "class": self.class_names[index], "class_index": index, "threshold": value,
                    "meaning": "the class when its probability >= threshold, else the most probable other class"}
        elif self.costs is not None:
            rule = {"kind": "costs", "matrix": np.asarray(self.costs).tolist(),
                    "meaning": "rows: true class, columns: decided class; decide argmin_j sum_i p(i|x) matrix[i][j]"}
        else:
            rule = {"kind": "argmax", "meaning": "the most probable class"}
        return {"temperature": self.temperature, "rule": rule}
