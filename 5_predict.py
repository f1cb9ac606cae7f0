"""Use a trained run: predict the classes of new images, or export the model to ONNX.

    python 5_predict.py --run logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 photos/ more.png
    python 5_predict.py --run logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 --export onnx

Predictions go to predictions.csv (path, predicted class, its probability, the top-5 classes and
probabilities); exit code 0, or 1 when some files could not be read (listed on stderr, skipped).
The export writes model.onnx and classes.json into the run directory and checks model.onnx
against PyTorch with onnxruntime.
"""
import sys
from pathlib import Path

import torch

from toolkit import arguments, cli, engine, export, files, images, metrics, runs
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
    return args


def predict(argv=None):
    args = parse_args(argv)
    engine.use_threads(args.threads)
    if args.export:
        return export_run(args, Predictor.of_run(args.run, device="cpu", precision="fp32"))

    predictor = Predictor.of_run(args.run, device=args.device, precision=args.precision)
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
    rows = metrics.prediction_rows(predicted, torch.cat(logits), record.class_names)
    files.write_csv(args.output, rows)
    print(f"wrote {args.output}: {cli.counted(len(rows), 'prediction')}"
          + (f", {cli.counted(len(skipped), 'file')} skipped" if skipped else ""))
    return EXIT_SKIPPED if skipped else 0


def report_skipped(skipped: list):
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)


# ---------------------------------------------------------------- export

def export_run(args, predictor: Predictor) -> int:
    folder = args.export_dir or args.run
    record = predictor.record
    check, source = export.check_images(args.run, args.images, record.height, record.width, args.workers)
    difference = export.export_onnx(predictor.model, predictor.checkpoint, folder, check, args.batchsize)
    print(f"wrote {folder / 'model.onnx'} (input {export.INPUT_NAME}: float32 RGB 0-255, N x 3 x {record.height} "
          f"x {record.width}; output {export.OUTPUT_NAME}: N x {len(record.class_names)}) and {folder / 'classes.json'}")
    print(f"onnxruntime vs PyTorch on {source}: max abs difference of the probabilities "
          f"{difference:.3g} (required below {export.TOLERANCE:g}): ok")
    return 0


def main(argv=None) -> int:
    return cli.run_main(predict, argv)


if __name__ == "__main__":
    sys.exit(main())
