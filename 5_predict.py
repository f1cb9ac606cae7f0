"""Use a trained run: predict the classes of new images, or export the model to ONNX.

    python 5_predict.py --run logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 photos/ more.png
    python 5_predict.py --run logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 --export onnx

    python 5_predict.py --run RUN --operating-point RUN/operating-point-9-recall-0.9 photos/
    python 5_predict.py --run RUN --costs costs.csv --calibrate --adapt-prior photos/

Predictions go to predictions.csv (path, predicted class, its probability, the top-5 classes and
probabilities); exit code 0, or 1 when some files could not be read (listed on stderr, skipped).
A decision 2_test.py chose (--operating-point DIR, --costs FILE, --calibrate) adds a `decision`
column and makes the probabilities the calibrated ones; --adapt-prior re-weights them to the class
prior EM estimates from the images predicted (docs/decisions.md).
The export writes model.onnx and classes.json (with the temperature and the decision rule) into
the run directory and checks model.onnx against PyTorch with onnxruntime.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from toolkit import arguments, chosen_decisions, cli, decisions, engine, export, files, images, metrics, runs
from toolkit.predictor import Predictor

EXIT_SKIPPED = 1


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="5_predict.py", description=(
        "Predict the classes of images with a trained run's best checkpoint, or export it to ONNX."))
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGES",
                   help="image files and folders (searched recursively; other files in folders are ignored)")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR",
                   help="a run directory, e.g. logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42")
    p.add_argument("--output", type=Path, default=Path("predictions.csv"),
                   help="predictions file to write (default: predictions.csv in the current directory)")
    arguments.add_batchsize(p)
    p.add_argument("--tta", action="store_true",
                   help="average the probabilities of each image and its horizontal mirror")
    arguments.add_device(p, precision="fp32")
    arguments.add_threads(p)
    arguments.add_workers(p, at_least_one=True)
    p.add_argument("--operating-point", type=Path, metavar="DIR",
                   help="apply the threshold (and temperature) 2_test.py --operating-point chose and saved in DIR, "
                        "e.g. RUN/operating-point-9-recall-0.9")
    p.add_argument("--costs", type=Path, metavar="FILE",
                   help="decide the class of least expected cost under this CSV cost matrix (as 2_test.py --costs)")
    p.add_argument("--calibrate", action="store_true",
                   help="divide the logits by the temperature 2_test.py --calibrate temperature fit on the valid split")
    p.add_argument("--adapt-prior", action="store_true",
                   help="estimate the class prior of the images predicted by EM (Saerens et al. 2002) and re-weight "
                        "the probabilities to it; writes the estimated and the training prior beside the predictions")
    p.add_argument("--export", choices=("onnx",),
                   help="write model.onnx and classes.json and check them with onnxruntime, instead of predicting")
    p.add_argument("--export-dir", type=Path, metavar="DIR",
                   help="folder for the exported files (default: the run directory)")
    arguments.add_progress(p)
    args = p.parse_args(argv)
    runs.require_best_checkpoint(args.run)  # the run first: without it, nothing else matters
    if not args.export and not args.images:
        raise cli.UserError("name the images or folders to predict (e.g. 5_predict.py --run RUN_DIR photos/), "
                            "or pass --export onnx")
    if args.export and args.tta:
        raise cli.UserError("--tta applies to predictions, not to --export; leave one of them out")
    if args.operating_point is not None and args.costs is not None:
        raise cli.UserError("--operating-point and --costs are two decision rules; apply one of them")
    if args.adapt_prior and (args.export or args.operating_point is not None):
        raise cli.UserError("--adapt-prior estimates the prior of the images predicted: not for --export, nor for an "
                            "--operating-point, whose threshold keeps its recall only on the probabilities it was "
                            "chosen on; use it alone or with --costs")
    return args


def requested_decision(args, class_names) -> decisions.Decision:
    return chosen_decisions.requested(args.run, args.operating_point, args.costs, args.calibrate, class_names)


def deciding(args) -> bool:
    return args.operating_point is not None or args.costs is not None or args.calibrate


def predict(argv=None):
    args = parse_args(argv)
    engine.use_threads(args.threads)
    if args.export:
        predictor = Predictor.of_run(args.run, device="cpu", precision="fp32")
        return export_run(args, predictor, requested_decision(args, predictor.record.class_names))

    predictor = Predictor.of_run(args.run, device=args.device, precision=args.precision)
    decision = requested_decision(args, predictor.record.class_names)
    paths, skipped = images.find_images(args.images)
    record = predictor.record
    print(f"{predictor.path}: {cli.counted(len(paths), 'image')}, device {predictor.device}, "
          f"precision {predictor.precision.name}"
          f"{', mirrored too (--tta)' if args.tta else ''}")

    predicted, logits = [], []
    batches = images.decoded_batches(paths, record.height, record.width, args.batchsize, args.workers, skipped)
    for batch_paths, pixels in cli.progress_bar(batches, not args.no_progress, total=-(-len(paths) // args.batchsize),
                                                desc="predict", unit="batch"):
        logits.append(predictor.logits(pixels, mirrored=args.tta))
        predicted += batch_paths
    report_skipped(skipped)
    if not predicted:
        raise cli.UserError(f"none of the {cli.counted(len(paths), 'image')} could be read; nothing to predict")
    logits = torch.cat(logits).double().numpy()
    if deciding(args) or args.adapt_prior:
        probs = decision.probabilities(logits)
        if args.adapt_prior:
            probs = adapted(args, probs, record)
        rows = chosen_decisions.prediction_rows(predicted, probs, record.class_names, decision.decide(probs))
    else:
        rows = metrics.prediction_rows(predicted, logits, record.class_names)
    files.write_csv(args.output, rows)
    print(f"wrote {args.output}: {cli.counted(len(rows), 'prediction')}"
          + (f", {cli.counted(len(skipped), 'file')} skipped" if skipped else ""))
    return EXIT_SKIPPED if skipped else 0


def adapted(args, probs, record) -> np.ndarray:
    """--adapt-prior: the probabilities re-weighted to the prior EM estimates from these images,
    the estimated prior printed beside the training one and written beside the predictions."""
    path = args.output.with_name(f"{args.output.stem}_prior.csv")
    rows, probs, iterations = chosen_decisions.adapt_prior(probs, record.class_names, record.class_counts, path)
    print(f"class prior (%), training -> estimated from these images by EM ({iterations} iterations"
          f"{'' if args.calibrate else '; calibrated probabilities (--calibrate) estimate it better'}):")
    for row in rows:
        print(f"  {row['class']:<12} {row['training_prior']:6.2f} -> {row['estimated_prior']:6.2f}")
    print(f"wrote {path}")
    return probs


def report_skipped(skipped: list):
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)


# ---------------------------------------------------------------- export

def export_run(args, predictor: Predictor, decision: decisions.Decision) -> int:
    folder = args.export_dir or args.run
    record = predictor.record
    check, source = export.check_images(args.run, args.images, record.height, record.width, args.workers)
    difference = export.export_onnx(predictor.model, predictor.checkpoint, folder, check, args.batchsize, decision)
    print(f"wrote {folder / 'model.onnx'} (input {export.INPUT_NAME}: float32 RGB 0-255, N x 3 x {record.height} "
          f"x {record.width}; output {export.OUTPUT_NAME}: N x {len(record.class_names)}) and {folder / 'classes.json'}")
    print(f"onnxruntime vs PyTorch on {source}: max abs difference of the probabilities "
          f"{difference:.3g} (required below {export.TOLERANCE:g}): ok")
    return 0


def main(argv=None) -> int:
    return cli.run_main(predict, argv)


if __name__ == "__main__":
    sys.exit(main())
