"""Evaluate a run's best checkpoint on the test split and write its metrics and figures.

    python 2_test.py --dataset=digits-lt --model_index=42 --objective=CCE   # the newest such run

writes test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv and
reliability.svg into the run directory (into RUN/logit-adjusted/ with --logit-adjust, into
RUN/tau-normalised/ with --tau-norm).
acc, bacc and macro_f1 come with a 95% stratified bootstrap interval over the test images
(--bootstrap N resamples, seeded: a rerun writes the same files).
"""
import sys
import warnings

import torch

import get_model
from toolkit import arguments, cli, data, files, metrics, plots, runs
from toolkit.predictor import Predictor


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="2_test.py", description="Evaluate a trained run on the test split.")
    p.add_argument("--model_index", type=int, required=True, help="network, see `python get_model.py`")
    p.add_argument("--dataset", required=True, help="dataset folder name in a_datasets/")
    p.add_argument("--objective", default="ERM",
                   help="objective the run was trained with, as its logs folder is named, e.g. LDAM-DRW (default: ERM)")
    p.add_argument("--datetime", help="the run's YYYY-MM-DD-HH-MM-SS (default: the newest run)")
    arguments.add_batchsize(p)
    p.add_argument("--shot-thresholds", type=cli.positive_int, nargs=2, default=[100, 20], metavar=("MANY", "FEW"),
                   help="many-shot classes have more than MANY training images, few-shot fewer than FEW "
                        "(default: 100 20)")
    p.add_argument("--bootstrap", type=cli.non_negative_int, default=1000, metavar="N",
                   help="resamples of the 95%% interval of acc, bacc and macro_f1: a bootstrap over the test "
                        "images, stratified by class and seeded (default: 1000; 0: no intervals)")
    p.add_argument("--logit-adjust", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc logit adjustment: logits - TAU * log(training prior) before every metric; "
                        "auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc (the test split is not used "
                        "to choose it); writes into RUN/logit-adjusted/ (default: off)")
    p.add_argument("--tau-norm", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc tau-normalisation (Kang et al. 2020): the classifier's per-class rows divided by "
                        "their norm^TAU, the bias dropped; auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc "
                        "(the test split is not used to choose it); writes into RUN/tau-normalised/ (default: off)")
    arguments.add_device(p)
    arguments.add_workers(p)
    arguments.add_cache(p)
    arguments.add_progress(p)
    arguments.add_roots(p)
    args = p.parse_args(argv)
    many, few = args.shot_thresholds
    if few > many:
        raise cli.UserError(f"--shot-thresholds {many} {few}: the first (many-shot) must be >= the second (few-shot)")
    if args.logit_adjust is not None and args.tau_norm is not None:
        raise cli.UserError("--logit-adjust and --tau-norm are two post-hoc corrections with folders of their own; "
                            "run 2_test.py once with each")
    return args


def tau_or_auto(text: str):
    return text if text == "auto" else cli.non_negative_float(text)


def test(argv=None):
    args = parse_args(argv)
    run_dir = runs.find_run(args.logs_root, get_model.model_name(args.model_index), args.dataset,
                            args.objective, args.datetime)
    predictor = Predictor.of_run(run_dir, device=args.device, precision=args.precision)
    record, checkpoint = predictor.record, predictor.path
    dataset = data.dataset_dir(args.data_root, args.dataset)
    split = data.scan_split(dataset, data.evaluation_split(dataset), record.class_names)
    if args.tau_norm is not None:
        labels, logits, adjusted = tau_normalised(args, dataset, predictor, split)
        out_dir = run_dir / "tau-normalised"
    else:
        labels, logits = predicted(args, predictor, split, desc="test")
        out_dir, adjusted = run_dir, {}

    names, counts = record.class_names, record.class_counts
    if args.logit_adjust is not None:
        tau = args.logit_adjust
        if tau == "auto":
            tau = chosen_tau(args, dataset, predictor, split.name)
        logits, adjusted = metrics.adjust_logits(logits, counts, tau), {"tau": tau}
        out_dir = run_dir / "logit-adjusted"
    scores = metrics.test_metrics(labels, logits, counts, tuple(args.shot_thresholds))
    if args.bootstrap:
        scores = metrics.with_intervals(scores, metrics.bootstrap_intervals(labels, logits, args.bootstrap))
    per_class = metrics.per_class(labels, logits, names, counts)
    confusion = metrics.confusion_matrix(labels, logits.argmax(1), len(names))
    relative_paths = [str(p.relative_to(dataset)) for p in split.paths]
    files.write_csv(out_dir / "test_metrics.csv",
                    [{"split": split.name, "checkpoint": checkpoint.name, **adjusted, **scores}])
    files.write_csv(out_dir / "per_class.csv", per_class.to_dict("records"))
    files.write_csv(out_dir / "predictions.csv", metrics.prediction_rows(relative_paths, logits, names, labels))
    files.write_csv(out_dir / "confusion_matrix.csv",
                    [{"true \\ predicted": n, **dict(zip(names, row))} for n, row in zip(names, confusion.tolist())])
    plots.confusion_matrix(confusion, names, out_dir / "confusion_matrix.svg", metrics.head_to_tail_order(counts))
    plots.reliability_diagram(metrics.reliability_bins(labels, logits), scores["ece"], out_dir / "reliability.svg")

    print(f"{run_dir}: {checkpoint.name} on the {split.name} split ({len(labels)} images)"
          + (f", logits adjusted with tau {adjusted['tau']:g}" if "tau" in adjusted else "")
          + (f", classifier tau-normalised with tau {adjusted['tau_norm']:g}" if "tau_norm" in adjusted else ""))
    print(f"top-1 accuracy {scores['acc']:.2f}%   top-5 accuracy {scores['top5acc']:.2f}%")
    print(metrics.format_table(scores))
    if args.bootstrap:
        print(f"[95% interval: stratified bootstrap over the {len(labels)} test images, {args.bootstrap} resamples]")
    print(f"wrote test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv, reliability.svg"
          f" into {out_dir}")
    return 0


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
