"""Testing a run: its best checkpoint's labels and logits on the split it is judged on, the
post-hoc corrections whose tau is chosen on the valid split only (logit adjustment,
tau-normalisation), where a test goes, and the files it writes. 2_test.py and a search's
confirmation both test through `evaluate`, so their run directories hold the same files;
`run_dataset` is the one answer to "which dataset folder did this run train on"."""
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toolkit import cli, data, decisions, files, metrics, plots, runs
from toolkit.predictor import PredictionSettings, Predictor

BOOTSTRAP = 1000
SHOT_THRESHOLDS = (100, 20)
SETTINGS_FILE = "test_settings.json"
TEST_FILES = ("test_metrics.csv", "per_class.csv", "predictions.csv", "confusion_matrix.csv", "confusion_matrix.svg",
              "reliability.svg", "pr_curves.svg", SETTINGS_FILE)
POST_HOC_COLUMNS = ("tau", "tau_norm")  # how --logit-adjust and --tau-norm changed the logits
LOGIT_ADJUSTED, TAU_NORMALISED = runs.POST_HOC  # their folders below the run


@dataclass
class Options(PredictionSettings):
    """How a run is tested (2_test.py's options); the defaults are the run's own, canonical test."""
    bootstrap: int = BOOTSTRAP  # resamples of the 95% intervals; 0: none
    shot_thresholds: tuple = SHOT_THRESHOLDS  # (many, few) training images
    logit_adjust: float | str | None = None  # a tau, "auto" (chosen on valid), or None: off
    tau_norm: float | str | None = None  # likewise


def run_dataset(run_dir: Path, data_root=None, remedy="pass --data-root, the folder holding it") -> Path:
    """The folder of the dataset a run was trained on: below `data_root` when given, else below
    the data root the run was trained from (its args.json)."""
    recorded = runs.read_args(run_dir)
    name = recorded.get("dataset")
    folder = Path(data_root or recorded.get("data_root") or cli.DATA_ROOT) / (name or "")
    if not name or not folder.is_dir():
        raise cli.UserError(f"the run's dataset {name!r} is not at {folder}; {remedy}")
    return folder


@dataclass
class Subject:
    """A run under test: its best checkpoint's predictor, its dataset and the split it is judged on."""
    run_dir: Path
    predictor: Predictor
    dataset: Path
    split: data.Split
    options: Options

    @classmethod
    def of_run(cls, run_dir: Path, options: Options) -> "Subject":
        predictor = Predictor.of_run(run_dir, device=options.device, precision=options.precision)
        dataset = run_dataset(run_dir, options.data_root)
        split = data.scan_split(dataset, data.evaluation_split(dataset), predictor.record.class_names)
        return cls(Path(run_dir), predictor, dataset, split, options)

    @property
    def record(self):
        return self.predictor.record

    def valid_split(self) -> data.Split:
        return data.scan_split(self.dataset, "valid", self.record.class_names)

    def image_set(self, split: data.Split) -> data.ImageSet:
        o = self.options
        return data.load_images(split, self.record.height, self.record.width, self.predictor.device, o.cache_gb,
                                o.workers, o.progress)

    def predicted(self, split: data.Split, desc: str) -> tuple:
        """(labels, float32 logits) of every image of a split, on the CPU."""
        o = self.options
        return self.predictor.predict(self.image_set(split), o.batchsize, o.workers, o.progress, desc=desc)

    def features(self, split: data.Split, desc: str) -> tuple:
        """(labels, float32 features): what the classifier layer receives for every image of a split."""
        o = self.options
        labels, _, features = self.predictor.predict_with_features(self.image_set(split), o.batchsize, o.workers,
                                                                   o.progress, desc=desc)
        return labels, features


@dataclass
class Correction:
    """A post-hoc change of the logits: the folder below the run its test goes into, the columns
    that say how (tau or tau_norm), and how the valid split chose its tau (None: tau was given)."""
    folder: str = ""
    columns: dict = field(default_factory=dict)
    chosen: str | None = None


@dataclass
class Tested:
    """A test's outcome: its numbers, what it was set as and the folder its files are in."""
    subject: Subject
    labels: torch.Tensor
    logits: torch.Tensor
    correction: Correction
    settings: dict
    scores: dict
    out_dir: Path

    @property
    def canonical_dir(self) -> Path:
        """Where a test set as the canonical one goes; out_dir differs when this one is set otherwise."""
        return self.subject.run_dir / self.correction.folder


def evaluate(run_dir: Path, options: Options | None = None) -> Tested:
    """Test a run's best checkpoint on its dataset's test split (valid, with a warning, without
    one) and write every file of the test into the folder `output_dir` picks."""
    subject = Subject.of_run(run_dir, options or Options())
    labels, logits, correction = corrected(subject)
    settings = test_settings(subject, len(labels), correction)
    out_dir = output_dir(subject.run_dir / correction.folder, subject.options, settings["data"])
    scores = write_test(out_dir, subject, settings, labels, logits)
    return Tested(subject, labels, logits, correction, settings, scores, out_dir)


def test_run(run_dir: Path, *, device="auto", precision="auto", batchsize=128, workers=2, cache_gb=4.0,
             progress=False, data_root=None) -> dict:
    """`2_test.py --run RUN_DIR` with its default settings: the same files, the same bootstrap;
    returns the scores written to test_metrics.csv."""
    return evaluate(run_dir, Options(device=device, precision=precision, batchsize=batchsize, workers=workers,
                                     cache_gb=cache_gb, progress=progress, data_root=data_root)).scores


def test_settings(subject: Subject, images: int, correction: Correction) -> dict:
    """test_settings.json: what decides a test's numbers (a rerun with the same writes the same bytes)."""
    record, o = subject.record, subject.options
    return {"checkpoint": subject.predictor.path.name, "split": subject.split.name, "images": images,
            "data": data.fingerprint(subject.split, record.height, record.width),
            "data_root": str(subject.dataset.parent), "bootstrap": o.bootstrap,
            "shot_thresholds": list(o.shot_thresholds), **correction.columns}


# ---------------------------------------------------------------- post-hoc corrections, tau chosen on valid

def corrected(subject: Subject) -> tuple:
    """(labels, logits, Correction) of the evaluated split, with the post-hoc correction the
    options ask for (none by default)."""
    o = subject.options
    if o.tau_norm is not None:
        return tau_normalised(subject, o.tau_norm)
    labels, logits = subject.predicted(subject.split, desc="test")
    if o.logit_adjust is None:
        return labels, logits, Correction()
    tau, chosen = o.logit_adjust, None
    if tau == "auto":
        tau, chosen = chosen_tau(subject)
    return labels, metrics.adjust_logits(logits, subject.record.class_counts, tau), \
        Correction(LOGIT_ADJUSTED, {"tau": tau}, chosen)


def chosen_tau(subject: Subject) -> tuple:
    """--logit-adjust auto: (the tau with the best balanced accuracy on the VALID split, a line
    that says so); the evaluated split's labels and logits are never seen by the choice."""
    labels, logits = subject.predicted(subject.valid_split(), desc="valid")
    tau, by_tau = metrics.choose_tau(labels, logits, subject.record.class_counts)
    warn_if_valid_is_evaluated(subject)
    return tau, f"logit adjustment: tau {tau:g} (valid bacc {by_tau[tau]:.2f}, {by_tau[0.0]:.2f} at tau 0)"


def tau_normalised(subject: Subject, tau) -> tuple:
    """--tau-norm: (labels, tau-normalised logits, Correction) of the evaluated split; for auto,
    tau is chosen on the VALID split's features alone, before the evaluated split is read."""
    layer = subject.predictor.classifier()
    if type(layer) is not torch.nn.Linear:
        raise cli.UserError(f"--tau-norm rescales the per-class rows of a linear classifier; this run's classifier "
                            f"is a {type(layer).__name__} (a cosine classifier, as LDAM's, has unit rows already)")
    weight = layer.weight.detach().float().cpu()
    chosen = None
    if tau == "auto":
        valid_labels, features = subject.features(subject.valid_split(), "valid")
        tau, by_tau = metrics.choose_tau_norm(valid_labels, features, weight)
        chosen = f"tau-normalisation: tau {tau:g} (valid bacc {by_tau[tau]:.2f}, {by_tau[0.0]:.2f} at tau 0)"
        warn_if_valid_is_evaluated(subject)
    labels, features = subject.features(subject.split, "test")
    return labels, metrics.tau_normalised_logits(features, weight, tau), \
        Correction(TAU_NORMALISED, {"tau_norm": tau}, chosen)


def warn_if_valid_is_evaluated(subject: Subject):
    if subject.split.name == "valid":
        warnings.warn("tau was chosen on the valid split that is also evaluated: its numbers are optimistic",
                      stacklevel=3)


# ---------------------------------------------------------------- where a test goes, and its files

def output_dir(folder: Path, options: Options, data_fingerprint: str) -> Path:
    """Where this test goes: `folder` (the run's own test) when it is set as the canonical test
    is, else a folder below it named after what differs; a test of other data than the test
    already there goes beside it too, so the numbers 4_report.py reads are never silently replaced."""
    parts = ([f"bootstrap-{options.bootstrap}"] if options.bootstrap != BOOTSTRAP else []) + \
            ([f"shots-{options.shot_thresholds[0]}-{options.shot_thresholds[1]}"]
             if tuple(options.shot_thresholds) != SHOT_THRESHOLDS else [])
    chosen = folder / "-".join(parts) if parts else folder
    stored = stored_settings(chosen)
    if stored is not None and stored.get("data") != data_fingerprint:
        chosen = folder / "-".join(parts + [f"data-{data_fingerprint[:8]}"])
    return chosen


def stored_settings(folder: Path):
    """The test_settings.json of the test in `folder`; None when there is none."""
    try:
        return json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_test(out_dir: Path, subject: Subject, settings: dict, labels, logits) -> dict:
    """Every file of a test (TEST_FILES) of the subject's split from its labels and (corrected)
    logits, set as `settings` says; returns the scores of test_metrics.csv."""
    record, split = subject.record, subject.split
    names, counts = record.class_names, record.class_counts
    scores = metrics.test_metrics(labels, logits, counts, tuple(settings["shot_thresholds"]), class_names=names)
    if settings["bootstrap"]:
        scores = metrics.with_intervals(scores, metrics.bootstrap_intervals(labels, logits, settings["bootstrap"]))
    adjusted = {key: settings[key] for key in POST_HOC_COLUMNS if key in settings}
    confusion = metrics.confusion_matrix(labels, logits.argmax(1), len(names))
    relative_paths = [str(p.relative_to(subject.dataset)) for p in split.paths]
    files.write_csv(out_dir / "test_metrics.csv",
                    [{"split": split.name, "checkpoint": settings["checkpoint"], **adjusted, **scores}])
    files.write_csv(out_dir / "per_class.csv", metrics.per_class(labels, logits, names, counts).to_dict("records"))
    files.write_csv(out_dir / "predictions.csv", metrics.prediction_rows(relative_paths, logits, names, labels))
    files.write_csv(out_dir / "confusion_matrix.csv",
                    [{"true \\ predicted": n, **dict(zip(names, row))} for n, row in zip(names, confusion.tolist())])
    plots.confusion_matrix(confusion, names, out_dir / "confusion_matrix.svg", metrics.head_to_tail_order(counts))
    plots.reliability_diagram(metrics.reliability_bins(labels, logits), scores["ece"], out_dir / "reliability.svg")
    plots.pr_curves(decisions.precision_recall_curves(labels, decisions.calibrated(logits)), names,
                    out_dir / "pr_curves.svg")
    files.write_json(out_dir / SETTINGS_FILE, settings)
    return scores


test_run.__test__ = test_settings.__test__ = False  # not pytest tests, despite their names
