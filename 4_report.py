"""Compare runs: a summary table and pictures of every run below a folder of logs/.

    python 4_report.py logs/ResNet32/digits-lt        # default: all of logs/

writes summary.csv, valid_curves.svg and per_class_recall.svg into that folder.
"""
import sys
from pathlib import Path

import pandas as pd

from toolkit import cli, files, plots, runs

SHOWN = ["model", "dataset", "objective", "augment", "datetime", "epochs", "best_valid", "test_acc", "test_bacc",
         "test_macro_f1", "test_gmean", "test_few_shot"]


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="4_report.py", description="Summarise and compare the runs below a folder.")
    p.add_argument("folder", nargs="?", type=Path, default=cli.LOGS_ROOT,
                   help="a folder of logs/, e.g. logs/ResNet32/digits-lt (default: logs/)")
    p.add_argument("--latest", action="store_true",
                   help="only the newest run of each model, dataset and objective")
    return p.parse_args(argv)


def newest_of_each(found: list) -> list:
    """The last run (they are oldest first) of each logs/<model>/<dataset>/<objective>/ folder."""
    return list({run.parent: run for run in found}.values())


def label(summary: dict, several_models: bool, several_datasets: bool) -> str:
    parts = [summary["model"]] if several_models else []
    parts += [summary["dataset"]] if several_datasets else []
    return " ".join(parts + [summary["objective"], summary["datetime"]])


def report(argv=None):
    args = parse_args(argv)
    if not args.folder.is_dir():
        raise cli.UserError(f"no folder {args.folder}; give a folder of logs/, e.g. logs/ResNet32/digits-lt")
    found = runs.list_runs(args.folder)
    if args.latest:
        found = newest_of_each(found)
    if not found:
        raise cli.UserError(f"no runs below {args.folder} (a run is a folder holding args.json)")
    summaries = [runs.run_summary(run) for run in found]
    table = pd.DataFrame(summaries)
    several_models, several_datasets = table["model"].nunique() > 1, table["dataset"].nunique() > 1
    labels = [label(s, several_models, several_datasets) for s in summaries]
    files.write_csv(args.folder / "summary.csv", summaries)

    plots.valid_curves([(name, runs.read_log(run, "valid")) for name, run in zip(labels, found)],
                       args.folder / "valid_curves.svg")
    tested = [(name, pd.read_csv(run / "per_class.csv", dtype={"class": str}), summary["dataset"])
              for name, run, summary in zip(labels, found, summaries) if (run / "per_class.csv").exists()]
    written = ["summary.csv", "valid_curves.svg"]
    for dataset in dict.fromkeys(d for _, _, d in tested):
        name = f"per_class_recall_{dataset}.svg" if several_datasets else "per_class_recall.svg"
        plots.per_class_recall([(n, frame) for n, frame, d in tested if d == dataset], args.folder / name)
        written.append(name)

    if "test_bacc" in table:
        table = table.sort_values("test_bacc", ascending=False, na_position="last")
    shown = table[[c for c in SHOWN if c in table]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))
    print(f"{len(found)} runs ({len(tested)} tested); wrote {', '.join(written)} into {args.folder}")
    return 0


def main(argv=None) -> int:
    return cli.run_main(report, argv)


if __name__ == "__main__":
    sys.exit(main())
