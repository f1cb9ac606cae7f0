"""Evaluate a run's best checkpoint on the test split and write its metrics and figures.

    python 2_test.py --dataset=digits-lt --model_index=42 --objective=CCE   # the newest such run

    python 2_test.py --run logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42            # that run

writes test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv, reliability.svg
and test_settings.json into the run directory (into RUN/logit-adjusted/ with --logit-adjust, into
RUN/tau-normalised/ with --tau-norm).
A decision chosen on the valid split and judged on test goes into a folder of its own too:
--operating-point 9:recall=0.9 (RUN/operating-point-9-recall-0.9/), --costs FILE (RUN/costs-NAME/),
--calibrate temperature (RUN/calibrated/, or a calibrated-... prefix); see docs/decisions.md.
acc, bacc and macro_f1 come with a 95% stratified bootstrap interval over the test images
(--bootstrap N resamples, seeded: a rerun writes the same files). The run's own test is only
rewritten by a test set as it was: another --bootstrap, --shot-thresholds or test data is
written into a folder of its own below it (RUN/bootstrap-0/, RUN/data-1a2b3c4d/, ...).
"""
import json
import sys
import warnings
from pathlib import Path

import torch

import get_model
from toolkit import arguments, chosen_decisions, cli, data, decisions, engine, files, metrics, plots, runs
from toolkit.predictor import Predictor


BOOTSTRAP = 1000
SHOT_THRESHOLDS = [100, 20]
SETTINGS_FILE = "test_settings.json"


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="2_test.py", description="Evaluate a trained run on the test split.")
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="the run directory to test, e.g. logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 (instead "
                        "of --model_index, --dataset, --objective, --datetime)")
    p.add_argument("--model_index", type=int, help="network, see `python get_model.py`")
    arguments.add_dataset(p)
    p.add_argument("--objective", default="ERM",
                   help="objective the run was trained with, as its logs folder is named, e.g. LDAM-DRW (default: ERM)")
    p.add_argument("--datetime", help="the run's YYYY-MM-DD-HH-MM-SS (default: the newest run)")
    arguments.add_batchsize(p)
    p.add_argument("--shot-thresholds", type=cli.positive_int, nargs=2, default=SHOT_THRESHOLDS,
                   metavar=("MANY", "FEW"),
                   help="many-shot classes have more than MANY training images, few-shot fewer than FEW "
                        "(default: 100 20; others write into RUN/shots-MANY-FEW/)")
    p.add_argument("--bootstrap", type=cli.non_negative_int, default=BOOTSTRAP, metavar="N",
                   help="resamples of the 95%% interval of acc, bacc and macro_f1: a bootstrap over the test "
                        "images, stratified by class and seeded (default: 1000; 0: no intervals; other than "
                        "1000: writes into RUN/bootstrap-N/)")
    p.add_argument("--logit-adjust", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc logit adjustment: logits - TAU * log(training prior) before every metric; "
                        "auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc (the test split is not used "
                        "to choose it); writes into RUN/logit-adjusted/ (default: off)")
    p.add_argument("--tau-norm", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc tau-normalisation (Kang et al. 2020): the classifier's per-class rows divided by "
                        "their norm^TAU, the bias dropped; auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc "
                        "(the test split is not used to choose it); writes into RUN/tau-normalised/ (default: off)")
    p.add_argument("--operating-point", metavar="CLASS:recall=R",
                   help="decide CLASS when its probability reaches a threshold chosen on the valid split: the "
                        "largest with valid recall >= R (CLASS:recall=R), or the smallest with valid precision >= P "
                        "(CLASS:precision=P), else the most probable other class; writes into "
                        "RUN/operating-point-CLASS-recall-R/ (default: off)")
    p.add_argument("--costs", type=Path, metavar="FILE",
                   help="a CSV cost matrix (header and first column: class names; row: true class, column: "
                        "decided class): decide the class of least expected cost; writes into RUN/costs-NAME/")
    p.add_argument("--calibrate", choices=("temperature",),
                   help="one temperature fit on the valid split by NLL; ECE and NLL before and after; "
                        "--operating-point and --costs then use the calibrated probabilities (writes into "
                        "RUN/calibrated/ or a calibrated-... folder)")
    arguments.add_device(p)
    arguments.add_threads(p)
    arguments.add_workers(p)
    arguments.add_cache(p)
    arguments.add_progress(p)
    p.add_argument("--data-root", type=Path,
                   help="folder holding the run's dataset (default: the one it was trained from)")
    arguments.add_roots(p, data=False)
    args = p.parse_args(argv)
    given = cli.given_options(p, argv)
    if args.run is not None and given & {"model_index", "dataset", "objective", "datetime"}:
        raise cli.UserError("--run names the run itself; leave out --model_index, --dataset, --objective and "
                            "--datetime")
    if args.run is None and (args.model_index is None or args.dataset is None):
        raise cli.UserError("name the run: --run RUN_DIR, or --model_index and --dataset (with --objective and "
                            "--datetime to pick one)")
    many, few = args.shot_thresholds
    if few > many:
        raise cli.UserError(f"--shot-thresholds {many} {few}: the first (many-shot) must be >= the second (few-shot)")
    if args.logit_adjust is not None and args.tau_norm is not None:
        raise cli.UserError("--logit-adjust and --tau-norm are two post-hoc corrections with folders of their own; "
                            "run 2_test.py once with each")
    if args.operating_point is not None and args.costs is not None:
        raise cli.UserError("--operating-point and --costs are two decision rules; test each in a run of its own")
    if (args.logit_adjust is not None or args.tau_norm is not None) and deciding(args):
        raise cli.UserError("--operating-point, --costs and --calibrate decide on the model's own probabilities; "
                            "leave out --logit-adjust and --tau-norm")
    if args.costs is not None and not args.costs.is_file():
        raise cli.UserError(f"--costs {args.costs}: no such file")
    return args


def deciding(args) -> bool:
    return args.operating_point is not None or args.costs is not None or args.calibrate is not None


def tau_or_auto(text: str):
    return text if text == "auto" else cli.non_negative_float(text)


def test(argv=None):
    args = parse_args(argv)
    engine.use_threads(args.threads)
    run_dir = args.run or runs.find_run(args.logs_root, get_model.model_name(args.model_index), args.dataset,
                                        args.objective, args.datetime)
    predictor = Predictor.of_run(run_dir, device=args.device, precision=args.precision)
    record, checkpoint = predictor.record, predictor.path
    data_root = args.data_root or Path(runs.read_args(run_dir).get("data_root") or cli.DATA_ROOT)
    dataset = data.dataset_dir(data_root, record.dataset)
    split = data.scan_split(dataset, data.evaluation_split(dataset, warn=not deciding(args)), record.class_names)
    if deciding(args):
        return test_decision(args, run_dir, predictor, dataset, split, data_root)
    if args.tau_norm is not None:
        labels, logits, adjusted = tau_normalised(args, dataset, predictor, split)
        post_hoc = "tau-normalised"
    else:
        labels, logits = predicted(args, predictor, split, desc="test")
        logits, adjusted, post_hoc = post_hoc_adjusted(args, logits, dataset, predictor, split.name)

    settings = {"checkpoint": checkpoint.name, "split": split.name, "images": len(labels),
                "data": data.fingerprint(split, record.height, record.width), "data_root": str(data_root),
                "bootstrap": args.bootstrap, "shot_thresholds": list(args.shot_thresholds), **adjusted}
    out_dir = output_dir(run_dir / post_hoc, args, settings["data"])
    scores = write_test(out_dir, settings, labels, logits, split, dataset, record, args)

    print(f"{run_dir}: {checkpoint.name} on the {split.name} split ({cli.counted(len(labels), 'image')})"
          + (f", logits adjusted with tau {adjusted['tau']:g}" if "tau" in adjusted else "")
          + (f", classifier tau-normalised with tau {adjusted['tau_norm']:g}" if "tau_norm" in adjusted else ""))
    print(f"top-1 accuracy {scores['acc']:.2f}%   top-5 accuracy {scores['top5acc']:.2f}%")
    print(metrics.format_table(scores))
    if args.bootstrap:
        print(f"[95% interval: stratified bootstrap over the {cli.counted(len(labels), 'test image')}, "
              f"{cli.counted(args.bootstrap, 'resample')}]")
    print(f"wrote test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv, reliability.svg, "
          f"{SETTINGS_FILE} into {out_dir}")
    if out_dir != run_dir / post_hoc:
        print(f"(this test is set otherwise than the one in {run_dir / post_hoc}, which is kept)")
    return 0


def test_decision(args, run_dir: Path, predictor: Predictor, dataset: Path, split, data_root: Path) -> int:
    """--operating-point, --costs, --calibrate: chosen on the valid split, judged on the test split,
    written whole into a folder of its own below the run (the argmax test of the same
    probabilities beside the decision's files)."""
    record = predictor.record
    point = (decisions.parse_operating_point(args.operating_point, record.class_names)
             if args.operating_point is not None else None)
    costs = decisions.read_cost_matrix(args.costs, record.class_names) if args.costs is not None else None
    if split.name == "valid" or not (dataset / "valid").is_dir():
        raise cli.UserError(f"dataset {dataset.name} needs a valid split to choose the decision on and a test split "
                            f"to judge it on; make them with 0_data_split.py")
    valid = data.scan_split(dataset, "valid", record.class_names)
    valid_labels, valid_logits = predicted(args, predictor, valid, desc="valid")
    chosen = chosen_decisions.choose(valid_labels, valid_logits, record.class_names, point, costs, args.costs,
                                     args.calibrate is not None)
    labels, logits = predicted(args, predictor, split, desc="test")
    calibrated_logits = logits.double() / chosen.decision.temperature
    settings = {"checkpoint": predictor.path.name, "split": split.name, "images": len(labels),
                "data": data.fingerprint(split, record.height, record.width), "data_root": str(data_root),
                "bootstrap": args.bootstrap, "shot_thresholds": list(args.shot_thresholds),
                "decision": chosen.folder, "temperature": chosen.decision.temperature}
    out_dir = output_dir(run_dir / chosen.folder, args, settings["data"])
    with files.folder_written_whole(out_dir, "the decision's test") as staging:
        scores = write_test(staging, settings, labels, calibrated_logits, split, dataset, record, args)
        row = chosen_decisions.judge(staging, chosen, labels, logits, valid_labels, valid_logits,
                                     [str(p.relative_to(dataset)) for p in split.paths], args.bootstrap)
    print_decision(chosen, row, scores, len(labels))
    print(f"wrote {', '.join(sorted(p.name for p in out_dir.iterdir()))} into {out_dir}")
    return 0


def print_decision(chosen, row: dict, scores: dict, images: int):
    shown = metrics.format_value
    decision = chosen.decision
    if decision.temperature != 1.0:
        print(f"temperature {decision.temperature:.4g} (fit on the valid split): test ECE {row['ece_before']:.2f}% -> "
              f"{row['ece_after']:.2f}%, NLL {row['nll_before']:.4f} -> {row['nll_after']:.4f}")
    if chosen.point is not None:
        valid = chosen.chosen_files[chosen_decisions.OPERATING_POINT_FILE]
        print(f"operating point {chosen.point}: threshold {row['threshold']:.4g} on p({row['class']}), chosen on the "
              f"valid split (recall {valid['valid']['recall']:.2f}, precision {shown(valid['valid']['precision'])})"
              + ("" if valid["target_reached_on_valid"] else f"; no threshold reaches {chosen.point.kind} "
                 f"{chosen.point.target:g} on the valid split: the best one is used"))
        for name in ("recall", "precision", "false_positive_rate"):
            print(f"  test {name:<19} {interval(row, name)}   argmax {interval(row, 'argmax_' + name)}")
    if decision.costs is not None:
        print(f"mean cost per image: {interval(row, 'cost')}   argmax {interval(row, 'argmax_cost')}   "
              f"difference {interval(row, 'cost_difference')}")
    print(f"under the rule: bacc {interval(row, 'bacc')}, macro F1 {interval(row, 'macro_f1')}, worst class "
          f"{row['worst_class']} recall {row['worst_recall']:.2f}   (argmax: bacc {interval(scores, 'bacc')})")
    print(f"[95% intervals: stratified bootstrap over the {cli.counted(images, 'test image')}]")


def interval(row: dict, name: str) -> str:
    return metrics.format_value(row[name], row.get(name + "_ci_low"), row.get(name + "_ci_high"))


def post_hoc_adjusted(args, logits, dataset, predictor: Predictor, evaluated: str) -> tuple:
    """(logits, the columns that say how they were changed, the folder below the run that holds
    the test): a post-hoc change of the logits is tested into a folder of its own."""
    if args.logit_adjust is None:
        return logits, {}, ""
    tau = args.logit_adjust
    if tau == "auto":
        tau = chosen_tau(args, dataset, predictor, evaluated)
    return metrics.adjust_logits(logits, predictor.record.class_counts, tau), {"tau": tau}, "logit-adjusted"


def output_dir(folder: Path, args, data_fingerprint: str) -> Path:
    """Where this test goes: `folder` (the run's own test) when it is set as the canonical test
    is, else a folder below it named after what differs; a test of other data than the test
    already there goes beside it too, so the numbers 4_report.py reads are never silently replaced."""
    parts = ([f"bootstrap-{args.bootstrap}"] if args.bootstrap != BOOTSTRAP else []) + \
            ([f"shots-{args.shot_thresholds[0]}-{args.shot_thresholds[1]}"]
             if list(args.shot_thresholds) != SHOT_THRESHOLDS else [])
    chosen = folder / "-".join(parts) if parts else folder
    stored = stored_settings(chosen)
    if stored is not None and stored.get("data") != data_fingerprint:
        chosen = folder / "-".join(parts + [f"data-{data_fingerprint[:8]}"])
    return chosen


def stored_settings(folder: Path):
    try:
        return json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None


POST_HOC_COLUMNS = ("tau", "tau_norm")  # how --logit-adjust and --tau-norm changed the logits


def write_test(out_dir: Path, settings: dict, labels, logits, split, dataset, record, args):
    names, counts = record.class_names, record.class_counts
    scores = metrics.test_metrics(labels, logits, counts, tuple(args.shot_thresholds))
    if args.bootstrap:
        scores = metrics.with_intervals(scores, metrics.bootstrap_intervals(labels, logits, args.bootstrap))
    adjusted = {key: settings[key] for key in POST_HOC_COLUMNS if key in settings}
    confusion = metrics.confusion_matrix(labels, logits.argmax(1), len(names))
    relative_paths = [str(p.relative_to(dataset)) for p in split.paths]
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


def predicted(args, predictor: Predictor, split, desc: str) -> tuple:
    """(labels, logits) of every image of a split."""
    image_set = data.load_images(split, predictor.record.height, predictor.record.width, predictor.device,
                                 args.cache_gb, args.workers, not args.no_progress)
    return predictor.predict(image_set, args.batchsize, args.workers, not args.no_progress, desc=desc)


def chosen_tau(args, dataset, predictor: Predictor, evaluated: str) -> float:
    """--logit-adjust auto: the tau with the best balanced accuracy on the VALID split; the test
    split's labels and logits are never seen by the choice."""
    valid = data.scan_split(dataset, "valid", predictor.record.class_names)
    labels, logits = predicted(args, predictor, valid, desc="valid")
    tau, by_tau = metrics.choose_tau(labels, logits, predictor.record.class_counts)
    print(f"logit adjustment: tau {tau:g} (valid bacc {by_tau[tau]:.2f}, {by_tau[0.0]:.2f} at tau 0)")
    if evaluated == "valid":
        warnings.warn("tau was chosen on the valid split that is also evaluated: its numbers are optimistic",
                      stacklevel=2)
    return tau


def tau_normalised(args, dataset, predictor: Predictor, split) -> tuple:
    """--tau-norm: (labels, tau-normalised logits, {"tau_norm": tau}) of the evaluated split; for
    auto, tau is chosen on the VALID split's features alone, before the evaluated split is read."""
    layer = get_model.classifier_layer(predictor.model)
    if type(layer) is not torch.nn.Linear:
        raise cli.UserError(f"--tau-norm rescales the per-class rows of a linear classifier; this run's classifier "
                            f"is a {type(layer).__name__} (a cosine classifier, as LDAM's, has unit rows already)")
    weight = layer.weight.detach().float().cpu()
    tau = args.tau_norm
    if tau == "auto":
        valid = data.scan_split(dataset, "valid", predictor.record.class_names)
        valid_labels, features = classifier_inputs(args, predictor, layer, valid, "valid")
        tau, by_tau = metrics.choose_tau_norm(valid_labels, features, weight)
        print(f"tau-normalisation: tau {tau:g} (valid bacc {by_tau[tau]:.2f}, {by_tau[0.0]:.2f} at tau 0)")
        if split.name == "valid":
            warnings.warn("tau was chosen on the valid split that is also evaluated: its numbers are optimistic",
                          stacklevel=2)
    labels, features = classifier_inputs(args, predictor, layer, split, "test")
    return labels, metrics.tau_normalised_logits(features, weight, tau), {"tau_norm": tau}


def classifier_inputs(args, predictor: Predictor, layer, split, desc: str) -> tuple:
    """(labels, float32 features): what the classifier layer receives for every image of a split."""
    captured = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float()))
    try:
        labels, _ = predicted(args, predictor, split, desc)
    finally:
        hook.remove()
    return labels, torch.cat(captured).cpu()


def main(argv=None) -> int:
    return cli.run_main(test, argv)


if __name__ == "__main__":
    sys.exit(main())
