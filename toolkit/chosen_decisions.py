"""A decision chosen on validation and judged on test, in a folder of its own below the run
(2_test.py --operating-point, --costs, --calibrate temperature; the test itself through
toolkit/evaluation.py), and read back to deploy it (5_predict.py). The choice sees the
validation split only; the test split is read to judge it.
"""
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit import decisions, evaluation, files, metrics, plots
from toolkit.cli import UserError

OPERATING_POINT_FILE = "operating_point.json"
COSTS_FILE = "costs.json"
CALIBRATION_FILE = "calibration.json"
CALIBRATED_FOLDER = "calibrated"  # --calibrate temperature alone; 5_predict.py --calibrate reads its temperature


@dataclass
class Chosen:
    """The decision, the folder below the run it is tested into, and the files that say how it
    was chosen (name -> JSON), written beside the test."""
    decision: decisions.Decision
    folder: str
    point: decisions.OperatingPoint = None
    chosen_files: dict = field(default_factory=dict)


def _in_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)


def folder_name(point, costs_path, calibrate: bool) -> str:
    """calibrated, operating-point-9-recall-0.9, costs-missed_9 or calibrated-operating-point-..."""
    parts = [CALIBRATED_FOLDER] if calibrate else []
    if point is not None:
        parts.append(f"operating-point-{_in_name(point.class_name)}-{point.kind}-{point.target:g}")
    if costs_path is not None:
        parts.append(f"costs-{_in_name(Path(costs_path).stem)}")
    return "-".join(parts)


def choose(valid_labels, valid_logits, class_names, point=None, costs=None, costs_path=None,
           calibrate=False) -> Chosen:
    """Fit the temperature (calibrate) and choose the threshold (point) on the VALIDATION labels and
    logits given; `costs` need no choice."""
    valid_logits = np.asarray(valid_logits, dtype=np.float64)
    temperature = decisions.fit_temperature(valid_labels, valid_logits) if calibrate else 1.0
    valid_probs = decisions.calibrated(valid_logits, temperature)
    chosen_files, threshold = {}, None
    if calibrate:
        chosen_files[CALIBRATION_FILE] = {
            "method": "temperature scaling: softmax(logits / temperature), fit by NLL on the valid split",
            "temperature": temperature,
            "valid": decisions.calibration_figures(valid_labels, valid_logits, temperature)}
    if point is not None:
        found = decisions.choose_threshold(valid_labels, valid_probs, point)
        threshold = (point.class_index, found.value)
        chosen_files[OPERATING_POINT_FILE] = {
            "class": point.class_name, "class_index": point.class_index, "target": f"{point.kind}={point.target:g}",
            "threshold": found.value, "temperature": temperature if calibrate else None,
            "rule": "the class when its probability >= threshold, else the most probable other class",
            "chosen_on": "valid", "target_reached_on_valid": found.met,
            "valid": {"recall": found.recall, "precision": found.precision,
                      "false_positive_rate": found.false_positive_rate},
            "valid_argmax": decisions.class_figures(valid_labels, valid_probs.argmax(axis=1), point.class_index)}
    if costs is not None:
        chosen_files[COSTS_FILE] = {
            "source": str(costs_path), "class_names": list(class_names), "matrix": np.asarray(costs).tolist(),
            "rows": "true class", "columns": "decided class", "temperature": temperature if calibrate else None,
            "valid": valid_costs(valid_labels, valid_probs, costs)}
    decision = decisions.Decision(tuple(class_names), temperature, threshold, costs)
    return Chosen(decision, folder_name(point, costs_path, calibrate), point, chosen_files)


def valid_costs(labels, probs, costs) -> dict:
    """The cost rule's and the argmax's mean cost per image on the valid split, warned of when the
    rule costs more there: the rule trusts the probabilities to be the deployment's, which those of
    a run trained for a uniform prior (LA, balanced softmax) or an overconfident one are not."""
    found = decisions.mean_costs(labels, decisions.bayes_decisions(probs, costs), probs.argmax(axis=1), costs,
                                 resamples=0)
    if found["cost"] > found["argmax_cost"]:
        warnings.warn(f"on the valid split the cost rule costs more per image than the argmax ({found['cost']:.3f} "
                      f"against {found['argmax_cost']:.3f}): its probabilities are not the deployment's (an LA "
                      f"run's assume a uniform prior); try --calibrate temperature, or an ERM run "
                      f"(docs/decisions.md)", stacklevel=2)
    return found


@dataclass
class DecisionTested:
    """A decision's test: how it was chosen, the row of decision_metrics.csv, the scores of the
    argmax's test_metrics.csv beside it, and the folder they are in."""
    chosen: Chosen
    row: dict
    scores: dict
    out_dir: Path
    images: int


def evaluate(run_dir: Path, options: evaluation.Options, operating_point: str = None, costs_path: Path = None,
             calibrate=False) -> DecisionTested:
    """Choose the decision on the run's valid split, judge it on the test split, and write the
    argmax test of the (calibrated) logits and the decision's files whole into a folder of its own
    below the run (evaluation.output_dir's rules below it). Bad input is refused before anything is
    predicted or written."""
    dataset = evaluation.run_dataset(run_dir, options.data_root)
    if not (dataset / "valid").is_dir() or not (dataset / "test").is_dir():
        raise UserError(f"dataset {dataset.name} needs a valid split to choose the decision on and a test split "
                        f"to judge it on; make them with 0_data_split.py")
    subject = evaluation.Subject.of_run(run_dir, options)
    names = subject.record.class_names
    point = decisions.parse_operating_point(operating_point, names) if operating_point is not None else None
    costs = decisions.read_cost_matrix(costs_path, names) if costs_path is not None else None
    valid_labels, valid_logits = subject.predicted(subject.valid_split(), desc="valid")
    chosen = choose(valid_labels, valid_logits, names, point, costs, costs_path, calibrate)
    labels, logits = subject.predicted(subject.split, desc="test")
    temperature = chosen.decision.temperature
    settings = {**evaluation.test_settings(subject, len(labels), evaluation.Correction()),
                "decision": chosen.folder, "temperature": temperature}
    out_dir = evaluation.output_dir(subject.run_dir / chosen.folder, options, settings["data"])
    replaced = [p for p in out_dir.iterdir() if not p.is_dir()] if out_dir.is_dir() else None  # data-*/ stay
    with files.folder_written_whole(out_dir, "the decision's test", replaces=replaced) as staging:
        scores = evaluation.write_test(staging, subject, settings, labels, logits.double() / temperature)
        row = judge(staging, chosen, labels, logits, valid_labels, valid_logits,
                    [str(p.relative_to(subject.dataset)) for p in subject.split.paths], options.bootstrap)
    return DecisionTested(chosen, row, scores, out_dir, len(labels))


def judge(out_dir: Path, chosen: Chosen, labels, logits, valid_labels, valid_logits, paths, bootstrap: int) -> dict:
    """Write what the decision does on the test labels and logits into out_dir (beside the argmax
    test 2_test.py writes there): decision_metrics.csv, the rule's confusion matrix, predictions.csv
    with a `decision` column, pr_curves.svg, the choice's files, and reliability.svg before and
    after calibration. Returns the row of decision_metrics.csv."""
    decision, names = chosen.decision, list(chosen.decision.class_names)
    labels, logits = np.asarray(labels), np.asarray(logits, dtype=np.float64)
    probs = decision.probabilities(logits)
    decided, argmax = decision.decide(probs), probs.argmax(axis=1)
    row = {}
    if chosen.point is not None:
        c, threshold = decision.threshold
        row.update({"class": names[c], "target": f"{chosen.point.kind}={chosen.point.target:g}",
                    "threshold": threshold})
        for prefix, decided_by in (("", decided), ("argmax_", argmax)):
            figures = decisions.class_figures_with_intervals(labels, decided_by, c, bootstrap)
            row.update({prefix + name: value for name, value in figures.items()})
    if decision.costs is not None:
        row.update(decisions.mean_costs(labels, decided, argmax, decision.costs, bootstrap))
    row.update(decisions.decision_scores(labels, decided, names, bootstrap))
    # the test's ECE and NLL before and after: in the row, calibration.json and reliability.svg
    calibration = (decisions.calibration_figures(labels, logits, decision.temperature)
                   if CALIBRATION_FILE in chosen.chosen_files else None)
    if decision.temperature != 1.0:
        row.update(calibration)
    write_files(out_dir, chosen, row, labels, logits, probs, decided, valid_labels, valid_logits, paths, calibration)
    return row


def write_files(out_dir, chosen, row, labels, logits, probs, decided, valid_labels, valid_logits, paths,
                calibration):
    decision, names = chosen.decision, list(chosen.decision.class_names)
    files.write_csv(out_dir / "decision_metrics.csv", [row])
    confusion = metrics.confusion_matrix(labels, decided, len(names))
    files.write_csv(out_dir / "decision_confusion_matrix.csv",
                    [{"true \\ decided": n, **dict(zip(names, counts))}
                     for n, counts in zip(names, confusion.tolist())])
    plots.confusion_matrix(confusion, names, out_dir / "decision_confusion_matrix.svg")
    files.write_csv(out_dir / "predictions.csv", prediction_rows(paths, probs, names, decided, labels))
    marked = None
    if chosen.point is not None:  # the row's test figures of the rule
        marked = (decision.threshold[0], row["recall"], row["precision"], f"{chosen.point} (test)")
    valid_probs = decision.probabilities(valid_logits)
    plots.pr_curves(decisions.precision_recall_curves(labels, probs), names, out_dir / "pr_curves.svg",
                    decisions.precision_recall_curves(valid_labels, valid_probs), marked)
    for name, content in chosen.chosen_files.items():
        if name == CALIBRATION_FILE:
            content = {**content, "test": calibration}
        files.write_json(out_dir / name, content)
    if decision.temperature != 1.0:
        plots.reliability_before_after(metrics.reliability_bins(labels, logits),
                                       metrics.reliability_bins(labels, logits / decision.temperature),
                                       calibration["ece_before"], calibration["ece_after"], decision.temperature,
                                       out_dir / "reliability.svg")


def prediction_rows(paths, probs, class_names, decided, labels=None) -> list:
    """metrics.prediction_rows of these probabilities with `decision` beside `predicted`."""
    with np.errstate(divide="ignore"):  # a probability of 0 is a logit of -inf, and softmax gives it back
        log_probs = np.log(probs)
    rows = metrics.prediction_rows(paths, log_probs, class_names, labels)
    with_decision = []
    for row, chosen in zip(rows, decided):
        items = list(row.items())
        at = [key for key, _ in items].index("predicted") + 1
        with_decision.append(dict(items[:at] + [("decision", class_names[int(chosen)])] + items[at:]))
    return with_decision


# ---------------------------------------------------------------- read back, to deploy

def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(what) from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e})") from None


def saved_temperature(run_dir: Path) -> float:
    """The temperature 2_test.py --calibrate temperature fit on the run's validation split."""
    path = Path(run_dir) / CALIBRATED_FOLDER / CALIBRATION_FILE
    saved = _read_json(path, f"no temperature fit for this run ({path} is missing); fit one first: "
                             f"python 2_test.py --run {run_dir} --calibrate temperature")
    return float(saved["temperature"])


def saved_operating_point(folder: Path, class_names) -> decisions.Decision:
    """The decision of a 2_test.py --operating-point folder: its threshold and its temperature."""
    path = Path(folder) / OPERATING_POINT_FILE
    saved = _read_json(path, f"{folder} holds no {OPERATING_POINT_FILE}; name a folder 2_test.py --operating-point "
                             f"wrote, e.g. RUN/operating-point-9-recall-0.9")
    if saved["class"] not in class_names or class_names.index(saved["class"]) != saved["class_index"]:
        raise UserError(f"{path} was chosen for class {saved['class']!r} of another model; choose it for this run "
                        f"with 2_test.py --operating-point")
    return decisions.Decision(tuple(class_names), saved.get("temperature") or 1.0,
                              (saved["class_index"], float(saved["threshold"])))


def requested(run_dir: Path, operating_point: Path, costs_path: Path, calibrate: bool,
              class_names) -> decisions.Decision:
    """The decision 5_predict.py is asked to apply, read before any image is: a saved operating point
    (with its own temperature), a cost matrix, the saved temperature, or the plain argmax."""
    if operating_point is not None:  # it carries the temperature it was chosen with
        decision = saved_operating_point(operating_point, class_names)
        if calibrate and decision.temperature == 1.0:
            raise UserError(f"the threshold in {operating_point} was chosen on uncalibrated probabilities; leave "
                            f"out --calibrate, or choose it again with 2_test.py --calibrate temperature "
                            f"--operating-point ...")
        return decision
    temperature = saved_temperature(run_dir) if calibrate else 1.0
    if costs_path is not None:
        return decisions.Decision(tuple(class_names), temperature,
                                  costs=decisions.read_cost_matrix(costs_path, class_names))
    return decisions.Decision(tuple(class_names), temperature)


def adapt_prior(probs, class_names, class_counts, path: Path) -> tuple:
    """(rows of the training and the estimated prior in %, the re-weighted probabilities, EM's
    iterations): the prior of the images predicted, estimated by EM and written to `path`."""
    train_prior = np.asarray(class_counts, dtype=np.float64) / sum(class_counts)
    prior, probs, iterations = decisions.estimate_prior(probs, train_prior)
    rows = [{"class": name, "training_prior": 100 * t, "estimated_prior": 100 * e}
            for name, t, e in zip(class_names, train_prior, prior)]
    files.write_csv(path, rows)
    return rows, probs, iterations
