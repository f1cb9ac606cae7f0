"""Numbers from (labels, logits): accuracy, top-5, balanced accuracy, F1, G-mean, AUC, ECE, per class.

Inputs are torch tensors or numpy arrays: `labels` int (N,), `logits` float (N, K), where K is the
number of classes in the dataset (it may exceed the classes present in `labels`). Every rate is in
percent (0-100) and rounded nowhere; `loss` and `nll` are in nats.
"""
import math
import warnings

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from scipy.special import log_softmax, softmax


def _to_numpy(x) -> np.ndarray:
    """A torch tensor (any device, any float type, bfloat16 included) or array-like as numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _as_numpy(labels, logits):
    """(labels, logits) as int64 (N,) and float64 (N, K) numpy arrays, shapes checked."""
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    logits = _to_numpy(logits).astype(np.float64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"expected labels (N,) and logits (N, K), got {labels.shape} and {logits.shape}")
    if len(labels) == 0:
        raise ValueError("no samples: metrics need at least one label")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return labels, logits


def _counts_per_class(train_counts, num_classes) -> np.ndarray:
    counts = _to_numpy(train_counts).astype(np.int64).reshape(-1)
    if len(counts) != num_classes:
        raise ValueError(f"expected {num_classes} train counts (one per logit column), got {len(counts)}")
    return counts


def _cross_entropy(labels, logits) -> float:
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def _top_k_accuracy(labels, logits, k=5) -> float:
    """Top-k accuracy in %; with K <= k classes every class is in the top k, so it is 100."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return 100.0 * float((top == labels[:, None]).any(axis=1).mean())


def _recalls(labels, preds, classes) -> np.ndarray:
    """Recall in % of each class in `classes`."""
    return 100.0 * skm.recall_score(labels, preds, labels=classes, average=None, zero_division=0)


def _one_vs_rest_auc(labels, probs, c) -> float:
    """ROC AUC in % of class c against the rest; NaN when c or the rest is missing from labels."""
    is_c = labels == c
    if is_c.all() or not is_c.any():
        return math.nan
    return 100.0 * skm.roc_auc_score(is_c, probs[:, c])


def _geometric_mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return 0.0 if (values <= 0).any() else float(np.exp(np.log(values).mean()))


def _mean_or_nan(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def epoch_metrics(labels, logits) -> dict:
    """The per-epoch validation log: loss (nats), acc, top5acc, bacc, macro_f1 (all %).

    bacc is the mean recall over the classes present in `labels`; macro_f1 is sklearn's macro F1
    over the classes present in `labels` or in the predictions.
    """
    labels, logits = _as_numpy(labels, logits)
    preds = logits.argmax(axis=1)
    return {
        "loss": _cross_entropy(labels, logits),
        "acc": 100.0 * skm.accuracy_score(labels, preds),
        "top5acc": _top_k_accuracy(labels, logits),
        "bacc": float(_recalls(labels, preds, np.unique(labels)).mean()),
        "macro_f1": 100.0 * skm.f1_score(labels, preds, average="macro", zero_division=0),
    }


def test_metrics(labels, logits, train_counts, shot_thresholds=(100, 20), n_bins=15, class_names=None) -> dict:
    """Every test-split number, insertion-ordered; rates in %, nll in nats.

    Class-averaged metrics (macro_*, weighted_f1, bacc, gmean, mauc) are taken over the classes
    PRESENT in the test labels: a class with no test sample has no recall to average, and counting
    it as 0 would punish a model for the split, not for its predictions. A prediction of an absent
    class is still a miss of its true class (it lowers that class's recall).
    gmean is 0 when any present class has recall 0; mauc is NaN with fewer than 2 classes present.
    min_recall is the worst present class's recall, min_recall_class that class (its name from
    `class_names`, else its index; the first of a tie): the number an average hides.
    Shot groups by train count with (hi, lo) = shot_thresholds: many > hi >= medium >= lo > few;
    each is the mean test recall of its present classes, NaN when it has none.
    """
    labels, logits = _as_numpy(labels, logits)
    probs = softmax(logits, axis=1)
    preds = logits.argmax(axis=1)
    present = np.unique(labels)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, preds, labels=present, average="macro", zero_division=0)
    recalls = _recalls(labels, preds, present)
    auc = [_one_vs_rest_auc(labels, probs, c) for c in present]
    return {
        "acc": 100.0 * skm.accuracy_score(labels, preds),
        "top5acc": _top_k_accuracy(labels, logits),
        "bacc": float(recalls.mean()),
        "macro_precision": 100.0 * precision,
        "macro_recall": 100.0 * recall,
        "macro_f1": 100.0 * f1,
        "weighted_f1": 100.0 * skm.f1_score(labels, preds, labels=present, average="weighted", zero_division=0),
        "gmean": _geometric_mean(recalls),
        "min_recall": float(recalls.min()),
        "min_recall_class": _name(present[recalls.argmin()], class_names),
        "mauc": math.nan if len(present) < 2 else float(np.mean(auc)),
        "ece": expected_calibration_error(reliability_bins(labels, logits, n_bins)),
        "nll": _cross_entropy(labels, logits),
        **_shot_groups(recalls, _counts_per_class(train_counts, logits.shape[1])[present], *shot_thresholds),
    }


test_metrics.__test__ = False  # not a pytest test, despite the name


def _name(index, class_names):
    return class_names[int(index)] if class_names is not None else int(index)


def zero_recall_classes(labels, logits, class_names=None) -> list:
    """The classes present in `labels` that are never predicted right (recall 0), by name (or
    index): a checkpoint that leaves one is degenerate however good its average."""
    labels, logits = _as_numpy(labels, logits)
    present = np.unique(labels)
    recalls = _recalls(labels, logits.argmax(axis=1), present)
    return [_name(c, class_names) for c in present[recalls == 0]]


REBALANCING = ("LA", "LDAM-DRW")  # the recipes the zero-recall warning suggests


def warn_zero_recall(classes: list, where: str, recipe: str | None = None):
    """One `warning:` line (through the warnings module, as cli.run_main prints it) when `classes`,
    from zero_recall_classes, is not empty."""
    message = zero_recall_warning(classes, where, recipe)
    if message:
        warnings.warn(message, stacklevel=2)


def zero_recall_warning(classes: list, where: str, recipe: str | None = None) -> str | None:
    """What says that a checkpoint never predicts some class right, or None; the advice leaves out
    the recipe the run already is (its objective folder: LA, or LA-linear, LA-SAM)."""
    if not classes:
        return None
    others = [r for r in REBALANCING if not (recipe == r or str(recipe).startswith(r + "-"))]  # LA-linear is LA
    advice = (f"a rebalancing objective (--objective {' or '.join(others)})" if len(others) == len(REBALANCING)
              else f"another rebalancing recipe ({', '.join(others)}), more epochs")
    return (f"{where} never predicts class{'es' if len(classes) > 1 else ''} "
            f"{', '.join(repr(str(c)) for c in classes)} right (recall 0): its averages hide a class it does not "
            f"recognise; try {advice} or --sampler class")


def _shot_groups(recalls, counts, hi, lo) -> dict:
    """Mean recall of the many (> hi), medium (hi >= count >= lo) and few (< lo) shot classes."""
    return {
        "many_shot": _mean_or_nan(recalls[counts > hi]),
        "medium_shot": _mean_or_nan(recalls[(counts <= hi) & (counts >= lo)]),
        "few_shot": _mean_or_nan(recalls[counts < lo]),
    }


SHOT_GROUPS = ("many_shot", "medium_shot", "few_shot")


def describe_shot_groups(train_counts, shot_thresholds, class_names, listed=10) -> str:
    """Which classes each shot group holds under the thresholds in use, an empty group said as
    such: fixed thresholds (100, 20) fit CIFAR-LT, not every dataset."""
    hi, lo = shot_thresholds
    counts = _to_numpy(train_counts).reshape(-1)
    members = {f"many (> {hi})": counts > hi, f"medium ({lo}-{hi})": (counts <= hi) & (counts >= lo),
               f"few (< {lo})": counts < lo}

    def named(mask):
        names = [str(class_names[i]) for i in np.flatnonzero(mask)]
        return "empty" if not names else ", ".join(names[:listed]) + (f" and {len(names) - listed} more" if
                                                                         len(names) > listed else "")
    text = (f"shot groups by training images (--shot-thresholds {hi} {lo}): "
            + "; ".join(f"{group}: {named(mask)}" for group, mask in members.items()))
    if not all(mask.any() for mask in members.values()):
        text += ("\n(an empty group has no recall to average; to compare groups, pick --shot-thresholds that cut "
                 "your classes' training counts into head, middle and tail: see the README)")
    return text


def per_class(labels, logits, class_names, train_counts) -> pd.DataFrame:
    """One row per class in class_names, sorted by train_count descending (ties keep class order).

    Columns: class, train_count, support (test count), precision, recall, f1, auc, ap (average
    precision of the class's probability, scikit-learn's; all in %); a class absent from the test
    labels has support 0, recall 0, auc and ap NaN.
    """
    labels, logits = _as_numpy(labels, logits)
    train_counts = _counts_per_class(train_counts, logits.shape[1])
    if len(class_names) != logits.shape[1]:
        raise ValueError(f"expected {logits.shape[1]} class names (one per logit column), got {len(class_names)}")
    probs = softmax(logits, axis=1)
    classes = np.arange(len(class_names))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, logits.argmax(axis=1), labels=classes, average=None, zero_division=0)
    table = pd.DataFrame({
        "class": list(class_names),
        "train_count": train_counts,
        "support": support,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "auc": [_one_vs_rest_auc(labels, probs, c) for c in classes],
        "ap": [100.0 * skm.average_precision_score(labels == c, probs[:, c]) if (labels == c).any() else math.nan
               for c in classes],
    })
    return table.iloc[head_to_tail_order(train_counts)].reset_index(drop=True)


def confusion_matrix(labels, preds, num_classes) -> np.ndarray:
    """Counts (K, K): rows = true class, columns = predicted class."""
    return skm.confusion_matrix(_to_numpy(labels), _to_numpy(preds), labels=np.arange(num_classes))


def reliability_bins(labels, logits, n_bins=15) -> pd.DataFrame:
    """Confidence (max softmax prob) histogram: the data behind ECE and the reliability diagram.

    n_bins equal-width bins (lo, hi] over [0, 100] % (the first also holds 0). Columns lo, hi,
    count, confidence (mean, %), accuracy (%); confidence and accuracy are NaN for empty bins.
    """
    labels, logits = _as_numpy(labels, logits)
    probs = softmax(logits, axis=1)
    confidence, correct = probs.max(axis=1), logits.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a value equal to an edge into the bin that edge closes: (lo, hi]
    bin_of = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        in_bin = bin_of == b
        count = int(in_bin.sum())
        rows.append({
            "lo": 100.0 * edges[b],
            "hi": 100.0 * edges[b + 1],
            "count": count,
            "confidence": 100.0 * confidence[in_bin].mean() if count else math.nan,
            "accuracy": 100.0 * correct[in_bin].mean() if count else math.nan,
        })
    return pd.DataFrame(rows)


def expected_calibration_error(bins: pd.DataFrame) -> float:
    """ECE in % from reliability_bins: sum over bins of |accuracy - confidence| * count / N."""
    filled = bins[bins["count"] > 0]
    gaps = (filled["accuracy"] - filled["confidence"]).abs()
    return float((gaps * filled["count"]).sum() / filled["count"].sum())


def head_to_tail_order(train_counts) -> list[int]:
    """Class indices from most to least frequent in training; ties keep class order."""
    counts = _to_numpy(train_counts)
    return sorted(range(len(counts)), key=lambda c: -counts[c])


def prediction_rows(paths, logits, class_names, labels=None, top_k=5) -> list[dict]:
    """One row per image: path, (true class,) predicted class and its probability in %, and the
    top-k classes with their probabilities (k = min(top_k, K))."""
    probs = softmax(_to_numpy(logits).astype(np.float64), axis=1)
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for i, path in enumerate(paths):
        row = {"path": str(path)}
        if labels is not None:
            row["true"] = class_names[int(labels[i])]
        row["predicted"] = class_names[top[i, 0]]
        row["probability"] = 100.0 * probs[i, top[i, 0]]
        for rank in range(k):
            row[f"top{rank + 1}"] = class_names[top[i, rank]]
            row[f"top{rank + 1}_prob"] = 100.0 * probs[i, top[i, rank]]
        rows.append(row)
    return rows


def format_table(scores: dict) -> str:
    """The metrics as two aligned columns; NaN prints as '-', an empty shot group as 'empty'. A metric with
    `<name>_ci_low` and `<name>_ci_high` in `scores` prints as `82.56 [74.10, 90.20]`; other values
    that are not numbers (a tau chosen on the validation split, say) print as they are."""
    shown = {name: value for name, value in scores.items()
             if not (name.endswith(("_ci_low", "_ci_high")) and name.rsplit("_ci_", 1)[0] in scores)}
    width = max(len(name) for name in shown)

    def cell(name, value):
        if not isinstance(value, float):  # a class name or index, a tau as it was given
            return f"{value:>8}"
        if f"{name}_ci_low" in scores:
            return f"{value:8.2f} [{format_value(scores[name + '_ci_low'])}, {format_value(scores[name + '_ci_high'])}]"
        if math.isnan(value):
            return f"{'empty' if name in SHOT_GROUPS else '-':>8}"
        return f"{value:8.2f}"
    return "\n".join(f"{name:<{width}}  {cell(name, value)}" for name, value in shown.items())


# ---------------------------------------------------------------- uncertainty and post-hoc adjustment

BOOTSTRAPPED = ("acc", "bacc", "macro_f1", "min_recall")
# the resamples are processed in chunks of about this many drawn indices (bounded memory on big test sets)
_BOOTSTRAP_CHUNK = 4_000_000


def stratified_indices(labels, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) indices into `labels`: each row draws, with replacement, as many images of
    each class as the class has, from that class only (a stratified bootstrap: supports are fixed)."""
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return np.concatenate([m[rng.integers(0, len(m), size=(resamples, len(m)))] for m in members], axis=1)


def _per_class_counts(classes, indices, num_classes, weights=None) -> np.ndarray:
    """(R, K) counts of `classes[indices]` per resample row (optionally weighted), one bincount."""
    resamples = len(indices)
    cells = classes[indices] + (np.arange(resamples) * num_classes)[:, None]
    flat_weights = None if weights is None else weights[indices].ravel()
    counts = np.bincount(cells.ravel(), weights=flat_weights, minlength=resamples * num_classes)
    return counts.reshape(resamples, num_classes)


def bootstrap_samples(labels, logits, resamples=1000, seed=0) -> dict:
    """acc, bacc, macro_f1 and min_recall (%) of `resamples` stratified bootstrap resamples of the test images:
    {metric: array (resamples,)}. The definitions are those of test_metrics: bacc and macro_f1 average
    over the classes present in the labels (the same classes in every resample, as each keeps its
    support), a prediction of an absent class still counts as a miss of its true class."""
    labels, logits = _as_numpy(labels, logits)
    preds, num_classes = logits.argmax(axis=1), logits.shape[1]
    correct = (preds == labels).astype(np.float64)
    present = np.unique(labels)
    support = np.bincount(labels, minlength=num_classes)[present].astype(np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK // len(labels))
    found = {name: [] for name in BOOTSTRAPPED}
    for start in range(0, resamples, chunk):
        indices = stratified_indices(labels, min(chunk, resamples - start), rng)
        # true positives and predictions per class: all that acc, bacc and F1 need of the confusion matrix
        hits = _per_class_counts(labels, indices, num_classes, correct)[:, present]
        predicted = _per_class_counts(preds, indices, num_classes)[:, present]
        found["acc"].append(100.0 * hits.sum(axis=1) / len(labels))
        found["bacc"].append(100.0 * (hits / support).mean(axis=1))
        # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted); support > 0 for a present class
        found["macro_f1"].append(100.0 * (2 * hits / (support + predicted)).mean(axis=1))
        found["min_recall"].append(100.0 * (hits / support).min(axis=1))
    return {name: np.concatenate(parts) for name, parts in found.items()}


def bootstrap_intervals(labels, logits, resamples=1000, seed=0, confidence=0.95) -> dict:
    """Percentile bootstrap intervals (%) of acc, bacc, macro_f1 and min_recall over the test images, stratified
    by class and seeded: {"acc_ci_low", "acc_ci_high", "bacc_ci_low", ...}. The interval says how
    much the number would move on another test split of the same size and class supports; it says
    nothing about the variation between training runs (seeds: see recipes.py)."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = 100.0 * (1 - confidence) / 2
    intervals = {}
    for name, values in bootstrap_samples(labels, logits, resamples, seed).items():
        low, high = np.percentile(values, [tail, 100.0 - tail])
        intervals.update({f"{name}_ci_low": float(low), f"{name}_ci_high": float(high)})
    return intervals


def with_intervals(scores: dict, intervals: dict) -> dict:
    """`scores` with each metric's _ci_low and _ci_high right after it."""
    merged = {}
    for name, value in scores.items():
        merged[name] = value
        for end in ("_ci_low", "_ci_high"):
            if name + end in intervals:
                merged[name + end] = intervals[name + end]
    return merged


def log_prior(train_counts) -> np.ndarray:
    """log of the training class frequencies; every class needs at least one training image."""
    counts = _to_numpy(train_counts).astype(np.float64).reshape(-1)
    if (counts <= 0).any():
        raise ValueError("logit adjustment needs a training count above 0 for every class")
    return np.log(counts / counts.sum())


def adjust_logits(logits, train_counts, tau: float):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): logits - tau * log(training prior).
    tau = 0 returns `logits` itself, so its numbers are exactly those of the plain logits."""
    if tau == 0:
        return logits
    values = _to_numpy(logits).astype(np.float64)
    return values - tau * log_prior(_counts_per_class(train_counts, values.shape[1]))


TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0, 0.1, ..., 2


def choose_tau(labels, logits, train_counts, grid=TAU_GRID) -> tuple:
    """The tau of `grid` with the highest balanced accuracy of the adjusted logits, ties to the
    smaller tau; returns (tau, {tau: bacc}). Give it VALIDATION labels and logits: a tau chosen
    on the test split makes the test numbers optimistic."""
    labels, logits = _as_numpy(labels, logits)
    return _best_on_grid(labels, lambda tau: adjust_logits(logits, train_counts, tau), grid)


def _best_on_grid(labels, logits_at, grid) -> tuple:
    """The tau of `grid` whose logits_at(tau) give the highest balanced accuracy, ties to the smaller."""
    present = np.unique(labels)
    found = {tau: float(_recalls(labels, np.asarray(logits_at(tau)).argmax(axis=1), present).mean())
             for tau in sorted(grid)}
    best = max(found.values())
    return next(tau for tau, value in found.items() if value == best), found


def tau_normalised_logits(features, weight, tau: float) -> np.ndarray:
    """tau-normalisation (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
    Recognition", ICLR 2020): the classifier's rows w_c divided by ||w_c||^tau, the logits f . w_c /
    ||w_c||^tau, the bias dropped, as the authors' script does (facebookresearch/classifier-balancing
    `tau_norm.py`:102-107 `pnorm`, :82-96 logits by dot product alone). tau 0 is the classifier
    without its bias; tau 1 gives every class a unit-norm row. `features` (N, D) are the
    classifier's inputs, `weight` (K, D) its weights."""
    features, weight = _to_numpy(features).astype(np.float64), _to_numpy(weight).astype(np.float64)
    norms = np.linalg.norm(weight, axis=1, keepdims=True)
    return features @ (weight / norms ** tau).T


def choose_tau_norm(labels, features, weight, grid=TAU_GRID) -> tuple:
    """The tau of `grid` (0, 0.1, ..., 2, the authors' np.linspace(0, 2, 21), `tau_norm.py`:110)
    with the highest balanced accuracy, ties to the smaller; returns (tau, {tau: bacc}). Give it
    VALIDATION labels and features: the authors' script scores each tau on the split it is
    given, and one chosen on the test split makes the test numbers optimistic."""
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    return _best_on_grid(labels, lambda tau: tau_normalised_logits(features, weight, tau), grid)


def format_value(value, low=None, high=None) -> str:
    """`82.56`, `82.56 [74.10, 90.20]` with an interval, `-` for NaN or None."""
    def shown(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
    if low is None and high is None:
        return shown(value)
    return f"{shown(value)} [{shown(low)}, {shown(high)}]"
