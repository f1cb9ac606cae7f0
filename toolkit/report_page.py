"""report.html: one self-contained page comparing the recipes below a folder of logs/.

Everything is inline (figures as <svg>, the style sheet in <style>): no scripts, fonts, images or
links to fetch, so the page opens from disk in any browser, offline, and can be mailed as one
file. All text that comes from the user (folder, objective and class names) is escaped.
"""
import html
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import metrics, plots, recipes, runs
from toolkit.files import write_atomically

SHOWN_METRICS = ("test_bacc", "test_acc", "test_macro_f1", "test_min_recall")  # the table's order: sorted by the first
STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1160px; margin: 0 auto; padding: 16px 20px; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.86em; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 6px; border-bottom: 1px solid #e3e3e3; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td.name, th.name { text-align: left; }
tr.better td { background: #e8f5e9; }
tr.worse td { background: #fdecea; }
tr.baseline td { background: #eef3fb; }
.note { font-size: 0.86em; color: #555; }
figure { margin: 0.6em 0; }
figure svg { max-width: 100%; height: auto; }
.wide { overflow-x: auto; }
figcaption { font-size: 0.86em; color: #444; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid figure { flex: 0 1 540px; }
"""

HOW_TO_READ = """
<p>Each number is the <b>mean over the seeds</b> of a recipe (runs whose settings agree on
everything but <code>--seed</code> and options that do not change the result), with its
<b>95% Student-t interval</b> in brackets: where the mean of many more seeds would fall, given how
much these seeds disagree. With 3 seeds the interval is wide (the t factor is 4.30; an end below 0 or
above 100 only says that the seeds cannot pin the mean down), and it says
nothing about the test split's own size: 2_test.py's bootstrap interval (in each run's
test_metrics.csv) covers that, and understates it for classes of a few test images (a class whose
images are all right, or all wrong, adds no width). <b>&Delta;bacc</b> compares a recipe with the baseline <b>seed by
seed</b> (the same seed, the same data order and initialisation), which cancels much of the luck
that both share: its interval is usually narrower than the two recipes' intervals suggest. A green
row's interval of the difference lies above 0, a red one's below; p is the paired t-test's
(<code>scipy.stats.ttest_rel</code>), and p (Holm) corrects it for comparing many recipes with one
baseline. An interval that excludes 0 on 3 seeds of one small dataset is evidence, not proof: run
more seeds before you trust a gain of a point or two, and choose a recipe on validation numbers, not
on these test numbers.</p>
"""


def _p_text(p) -> str:
    if pd.isna(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _seed_list(seeds) -> str:
    """'0, 1, 2': the seeds as the list they are (a lone '0' under "seeds" reads as a count)."""
    return ", ".join(str(seeds).split()) or "-"


def _seeds_cell(row) -> str:
    seeds = str(row["seeds"])
    extra = [] if row["runs"] == len(seeds.split()) else [f"{row['runs']} runs"]
    extra += [] if row["tested"] == row["runs"] else [f"{row['tested']} tested"]
    extra += ["interval: bootstrap of the run"] if row.get("interval") == recipes.RUN_INTERVAL else []
    return _seed_list(seeds) + (f" ({', '.join(extra)})" if extra else "")


def recipes_html(table: pd.DataFrame, several_models: bool, several_datasets: bool, baseline=None) -> str:
    """The recipes table, sorted by mean test bacc, as an HTML <table>."""
    compared = "bacc_diff_mean" in table
    heads = (["model"] if several_models else []) + (["dataset"] if several_datasets else [])
    names = len(heads) + 1
    heads += ["recipe", "seed list", "test bacc", "test acc", "test macro F1", "test min recall", "best valid"]
    if compared:
        heads += [f"&Delta;bacc vs {html.escape(str(baseline or 'baseline'))}", "p (Holm)", "paired seed list"]
    out = ["<table>", "<tr>" + "".join(f'<th class="{"name" if i < names else ""}">{h}</th>'
                                       for i, h in enumerate(heads)) + "</tr>"]
    for _, row in sort_by_bacc(table).iterrows():
        kind = ""
        if compared and row.get("baseline") is True:
            kind = "baseline"
        elif compared and recipes.excludes_zero(row):
            kind = "better" if row["bacc_diff_ci_low"] > 0 else "worse"
        monitor = next((c[len("best_valid_"):-len("_mean")] for c in table.columns
                        if c.startswith("best_valid_") and c.endswith("_mean") and not pd.isna(row[c])), None)
        cells = ([row["model"]] if several_models else []) + ([row["dataset"]] if several_datasets else [])
        cells += [row["recipe"], _seeds_cell(row)]
        cells += [metrics.format_value(row[f"{m}_mean"], row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high"))
                  for m in SHOWN_METRICS]
        cells[-1] += " (a class at 0 in some seed)" if row.get("runs_at_zero_recall", 0) else ""
        cells.append(f"{monitor} {metrics.format_value(row[f'best_valid_{monitor}_mean'])}" if monitor else "-")
        if compared:
            if kind == "baseline":
                cells += ["baseline", "-", "-"]
            else:
                cells += [metrics.format_value(row["bacc_diff_mean"], row["bacc_diff_ci_low"], row["bacc_diff_ci_high"]),
                          f"{_p_text(row['p_value'])} ({_p_text(row['p_holm'])})",
                          _seed_list(row["matched_seeds"])]
        text = [f'<td class="{"name" if i < names else ""}">{html.escape(str(value))}</td>'
                for i, value in enumerate(cells)]
        out.append(f'<tr class="{kind}">' + "".join(text) + "</tr>")
    out.append("</table>")
    out.append('<p class="note">Mean over the seeds [95% Student-t interval]; a recipe of one tested run shows that '
               "run's number [its 95% bootstrap interval over the test images]. Test min recall: the worst class's "
               "recall. Best valid: the mean of each run's best validation value of the metric that picked its "
               "checkpoint."
               + (" &Delta;bacc: recipe minus baseline, seed by seed, [95% interval]; p: paired t-test "
                  "(Holm-adjusted in brackets). Green: the interval lies above 0; red: below."
                  if compared else "") + "</p>")
    return "\n".join(out)


def sort_by_bacc(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("test_bacc_mean", ascending=False, na_position="last", kind="stable")


class _Figures:
    """Numbers the inlined SVGs, so that their ids differ."""

    def __init__(self):
        self.count = 0

    def figure(self, svg: str, caption: str) -> str:
        self.count += 1
        svg = plots.prefix_svg_ids(svg, f"f{self.count}-")
        return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _group_name(model, dataset, several_models, several_datasets) -> str:
    return " ".join(([model] if several_models else []) + ([dataset] if several_datasets else []))


def build_page(folder: Path, found: list, table: pd.DataFrame, summaries: dict, baseline=None) -> str:
    """The page's HTML: `found` are the recipes (recipes.group_runs), `table` their
    recipes_table, `summaries` maps each run directory to its runs.run_summary."""
    several_models = len({r.model for r in found}) > 1
    several_datasets = len({r.dataset for r in found}) > 1

    def name(recipe):
        return " ".join(filter(None, [_group_name(recipe.model, recipe.dataset, several_models, several_datasets),
                                      recipe.label]))

    figures = _Figures()
    groups = list(dict.fromkeys((r.model, r.dataset) for r in found))
    parts = [f"<h1>Which recipe works best? {html.escape(str(folder))}</h1>",
             f'<p class="meta">{sum(len(r.run_dirs) for r in found)} finished runs in {len(found)} recipes'
             + (f"; baseline {html.escape(baseline)}" if baseline else "") + "; written by 4_report.py</p>",
             "<h2>How to read the intervals</h2>", HOW_TO_READ,
             "<h2>Recipes</h2>", f'<div class="wide">{recipes_html(table, several_models, several_datasets, baseline)}</div>']

    parts.append("<h2>Validation curves</h2>")
    for model, dataset in groups:
        members = [r for r in found if (r.model, r.dataset) == (model, dataset)]
        curves = [(name(r), [runs.read_log(d, "valid") for d in r.run_dirs]) for r in members]
        if any(len(f) for _, frames in curves for f in frames):
            parts.append(figures.figure(plots.valid_bands_svg(curves),
                                        f"{model} on {dataset}: validation curves, the line the mean over the "
                                        f"seeds, the band mean \u00b1 one standard deviation"))

    parts.append("<h2>Per-class test recall</h2>")
    for model, dataset in groups:
        members = [r for r in found if (r.model, r.dataset) == (model, dataset)]
        tested = [(name(r), [pd.read_csv(d / "per_class.csv", dtype={"class": str}) for d in r.run_dirs
                             if (d / "per_class.csv").exists()]) for r in members]
        tested = [(n, frames) for n, frames in tested if frames]
        if tested:
            parts.append(figures.figure(plots.per_class_recall_svg(tested),
                                        f"{model} on {dataset}: mean test recall per class over the tested seeds, "
                                        f"error bars one standard deviation (cut at 0 and 100)"))
        else:
            parts.append('<p class="note">No tested runs: run 2_test.py on them for per-class recall.</p>')

    parts.append("<h2>Confusion matrices of the median runs</h2>")
    parts.append('<p class="note">For each recipe, its run of median test bacc (rows: true class, '
                 'fraction of it predicted as each column).</p><div class="grid">')
    for recipe, (_, row) in zip(found, table.iterrows()):
        run_dir = recipes.median_run(recipe, summaries)
        if run_dir is None or not (run_dir / "confusion_matrix.csv").exists():
            continue
        args = runs.read_args(run_dir)
        counts = pd.read_csv(run_dir / "confusion_matrix.csv", index_col=0).to_numpy()
        names = [str(c) for c in args.get("class_names", range(len(counts)))]
        order = metrics.head_to_tail_order(args["class_counts"]) if "class_counts" in args else None
        summary = summaries[run_dir]
        parts.append(figures.figure(
            plots.confusion_matrix_svg(np.asarray(counts), names, order, title=name(recipe)),
            f"{name(recipe)}: run {run_dir.name} (seed {args.get('seed')}, test bacc "
            f"{metrics.format_value(summary.get('test_bacc'))})"))
    parts.append("</div>")
    body = "\n".join(parts)
    title = html.escape(f"Report: {folder}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_page(path: Path, page: str):
    write_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
