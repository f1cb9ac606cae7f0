"""Evaluate a run's best checkpoint on the test split and write its metrics and figures.

    python 2_test.py --dataset=digits-lt --model_index=42 --objective=CCE   # the newest such run

writes test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv and
reliability.svg into the run directory.
"""
import sys

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
    arguments.add_device(p)
    arguments.add_workers(p)
    arguments.add_cache(p)
    arguments.add_progress(p)
    arguments.add_roots(p)
    args = p.parse_args(argv)
    many, few = args.shot_thresholds
    if few > many:
        raise cli.UserError(f"--shot-thresholds {many} {few}: the first (many-shot) must be >= the second (few-shot)")
    return args


def test(argv=None):
    args = parse_args(argv)
    run_dir = runs.find_run(args.logs_root, get_model.model_name(args.model_index), args.dataset,
                            args.objective, args.datetime)
    predictor = Predictor.of_run(run_dir, device=args.device, precision=args.precision)
    record, checkpoint = predictor.record, predictor.path
    dataset = data.dataset_dir(args.data_root, args.dataset)
    split = data.scan_split(dataset, data.evaluation_split(dataset), record.class_names)
    image_set = data.load_images(split, record.height, record.width, predictor.device, args.cache_gb,
                                 args.workers, not args.no_progress)
    labels, logits = predictor.predict(image_set, args.batchsize, args.workers, not args.no_progress, desc="test")

    names, counts = record.class_names, record.class_counts
    scores = metrics.test_metrics(labels, logits, counts, tuple(args.shot_thresholds))
    per_class = metrics.per_class(labels, logits, names, counts)
    confusion = metrics.confusion_matrix(labels, logits.argmax(1), len(names))
    relative_paths = [str(p.relative_to(dataset)) for p in split.paths]
    files.write_csv(run_dir / "test_metrics.csv", [{"split": split.name, "checkpoint": checkpoint.name, **scores}])
    files.write_csv(run_dir / "per_class.csv", per_class.to_dict("records"))
    files.write_csv(run_dir / "predictions.csv", metrics.prediction_rows(relative_paths, logits, names, labels))
    files.write_csv(run_dir / "confusion_matrix.csv",
                    [{"true \\ predicted": n, **dict(zip(names, row))} for n, row in zip(names, confusion.tolist())])
    plots.confusion_matrix(confusion, names, run_dir / "confusion_matrix.svg", metrics.head_to_tail_order(counts))
    plots.reliability_diagram(metrics.reliability_bins(labels, logits), scores["ece"], run_dir / "reliability.svg")

    print(f"{run_dir}: {checkpoint.name} on the {split.name} split ({len(labels)} images)")
    print(f"top-1 accuracy {scores['acc']:.2f}%   top-5 accuracy {scores['top5acc']:.2f}%")
    print(metrics.format_table(scores))
    print("wrote test_metrics.csv, per_class.csv, predictions.csv, confusion_matrix.svg/.csv, reliability.svg")
    return 0


def main(argv=None) -> int:
    return cli.run_main(test, argv)


if __name__ == "__main__":
    sys.exit(main())
