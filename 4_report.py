"""Compare runs: a summary table and pictures of every run below a folder of logs/, and the
recipes (runs that differ only in --seed) with intervals over their seeds.

    python 4_report.py logs/ResNet32/digits-lt                  # default: all of logs/
    python 4_report.py logs/ResNet32/digits-lt --baseline ERM   # each recipe against ERM, seed by seed

writes summary.csv, recipes.csv, report.html, valid_curves.svg and per_class_recall.svg into that folder
(per_class_recall_<dataset>.svg, one per dataset, when the folder holds several).
"""
import sys
from pathlib import Path

import pandas as pd

from toolkit import cli, files, plan, plots, recipes, report_page, runs

SHOWN = ["model", "dataset", "objective", "augment", "datetime", "epochs", "best_valid", "test_acc", "test_bacc",
         "test_macro_f1", "test_gmean", "test_min_recall", "test_min_recall_class", "test_few_shot"]


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="4_report.py", description="Summarise and compare the runs below a folder.")
    p.add_argument("folder", nargs="?", type=Path, default=cli.LOGS_ROOT,
                   help="a folder of logs/, e.g. logs/ResNet32/digits-lt (default: logs/)")
    p.add_argument("--latest", action="store_true",
                   help="only the newest run of each model, dataset and objective")
    p.add_argument("--baseline", metavar="OBJECTIVE",
                   help="compare every recipe with this one on the seeds both have: the mean difference of "
                        "test bacc, its 95%% interval and a paired t-test (an objective folder name, e.g. ERM, "
                        "or a recipe label when several recipes share it)")
    return p.parse_args(argv)


def training_defaults() -> dict:
    """What a run recorded before an option existed ran with."""
    return plan.defaults_of_older_runs()


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
    shown = runs.with_empty_groups_said(table[[c for c in SHOWN if c in table]])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))

    by_run = dict(zip(found, summaries))
    complete = [run for run in found if recipes.finished(run, by_run[run])]
    if len(complete) < len(found):
        print(f"left out of the recipes: {len(found) - len(complete)} unfinished run(s) (still training, or "
              f"stopped before their last epoch): {', '.join(str(r) for r in found if r not in complete)}")
    if not complete:
        raise cli.UserError(f"no finished runs below {args.folder}: recipes need runs that trained all their epochs")
    post_hoc = runs.post_hoc_results(complete)  # e.g. ERM+logit-adjusted: 2_test.py's corrections, recipes too
    by_run.update({result: runs.run_summary(result) for result in post_hoc})
    grouped = recipes.group_runs(complete + post_hoc, training_defaults())
    if args.baseline:  # a --baseline mistake points to recipes.csv for the labels: write it first
        files.write_csv(args.folder / "recipes.csv", recipes.recipes_table(grouped, by_run).to_dict("records"))
    table = recipes.recipes_table(grouped, by_run, args.baseline)
    files.write_csv(args.folder / "recipes.csv", table.to_dict("records"))
    report_page.write_page(args.folder / "report.html",
                           report_page.build_page(args.folder, grouped, table, by_run, args.baseline))
    written += ["recipes.csv", "report.html"]
    print()
    print(recipes.format_recipes(table))
    with_post_hoc = f" and {cli.counted(len(post_hoc), 'post-hoc result')}" if post_hoc else ""
    print(f"{cli.counted(len(found), 'run')} ({len(tested)} tested), {len(complete)} finished{with_post_hoc} in "
          f"{cli.counted(len(grouped), 'recipe')}; wrote {', '.join(written)} into {args.folder}")
    return 0


def main(argv=None) -> int:
    return cli.run_main(report, argv)


if __name__ == "__main__":
    sys.exit(main())
