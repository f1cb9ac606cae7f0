"""The answer of a recipe search: trials.csv, finalists.csv, recipes.csv, report.html and its first
line, from the two studies (toolkit/search.py) and the confirmation's run directories.

The winner is the finalist with the best mean validation value over the confirmation seeds: chosen
without a test label. Its test numbers and the paired test against ERM (Holm-adjusted over the
finalists) are computed as 4_report.py computes them (toolkit/recipes.py).
"""
import html
import math
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import TrialState

from toolkit import files, metrics, plan, plots, recipes, report_page, runs, search, search_space, search_storage

SIGNIFICANCE = 0.05
MIN_TRIALS_FOR_IMPORTANCES = 10  # below this, Optuna's importances rank noise (and a recipe's knobs few trials)


def worst_recall(run_dir: Path) -> float:
    """A tested run's worst-class test recall (%): test_metrics.csv's min_recall where 2_test.py
    wrote it, else the lowest recall of per_class.csv over the classes the test split holds."""
    tested = pd.read_csv(Path(run_dir) / "test_metrics.csv")
    if "min_recall" in tested.columns:
        return float(tested["min_recall"].iloc[0])
    per_class = pd.read_csv(Path(run_dir) / "per_class.csv", dtype={"class": str})
    return float(per_class.loc[per_class["support"] > 0, "recall"].min())


def trials_rows(study, settings) -> list:
    """trials.csv: number, state, objective, run_dir, every parameter, the value, the value at each rung."""
    rungs = search_space.rung_epochs(settings)
    names = list(dict.fromkeys(k for t in study.trials for k in t.params if k != "recipe"))
    rows = []
    for t in study.trials:
        row = {"number": t.number, "state": t.state.name, "objective": t.params.get("recipe"),
               "run_dir": t.user_attrs.get("run_dir", "")}
        row.update({name: t.params.get(name) for name in names})
        row["value"] = t.value
        row["epochs"] = max(t.intermediate_values, default=0)
        row.update({f"valid@{epoch}": t.intermediate_values.get(epoch) for epoch in rungs})
        retry = t.system_attrs.get("failed_trial")
        row["note"] = t.user_attrs.get("note", "") or (f"retry of trial {retry}" if retry is not None else "")
        rows.append(row)
    return rows


def confirmation(settings, entries: list, by_entry: dict) -> tuple:
    """(entries with their run directories, the recipes, the recipes table, the baseline's label)."""
    every = [d for i in by_entry for d in by_entry[i]]
    summaries = {d: runs.run_summary(d) for d in every}
    grouped = recipes.group_runs(every, plan.defaults_of_older_runs())
    baseline_dirs = set(by_entry[len(entries) - 1])
    baseline = next(r for r in grouped if set(r.run_dirs) <= baseline_dirs)
    table = recipes.recipes_table(grouped, summaries, baseline.label)
    for entry, index in zip(entries, range(len(entries))):
        entry["run_dirs"] = by_entry[index]
        entry["recipe_label"] = next((r.label for r in grouped if set(by_entry[index]) & set(r.run_dirs)), "")
        entry["confirm_valid"] = float(np.mean([summaries[d]["best_valid"] for d in by_entry[index]])) \
            if by_entry[index] else math.nan
        recalls = [worst_recall(d) for d in by_entry[index]]
        entry["worst_recall"] = min(recalls) if recalls else math.nan
        entry["zero_recall_seeds"] = sum(r == 0 for r in recalls)
    return entries, grouped, table, summaries, baseline.label


def finalists_rows(entries: list, table: pd.DataFrame) -> list:
    rows = []
    for rank, entry in enumerate(entries, 1):
        row = table[table["recipe"] == entry["recipe_label"]]
        row = row.iloc[0] if len(row) else {}
        rows.append({"rank": rank if entry["trial"] is not None else "baseline", "trial": entry["trial"],
                     "recipe": entry["label"], "search_valid": entry["valid"],
                     "seeds": " ".join(str(runs.read_args(d)["seed"]) for d in entry["run_dirs"]),
                     "confirm_valid_mean": entry["confirm_valid"],
                     "worst_class_recall": entry["worst_recall"],
                     "note": (f"a class at zero recall on {entry['zero_recall_seeds']} seed(s): never the winner"
                              if entry["zero_recall_seeds"] else ""),
                     **{k: row.get(k) for k in ("test_bacc_mean", "test_bacc_ci_low", "test_bacc_ci_high",
                                                "bacc_diff_mean", "bacc_diff_ci_low", "bacc_diff_ci_high",
                                                "p_value", "p_holm")},
                     "run_dirs": " ".join(str(d) for d in entry["run_dirs"])})
    return rows


def winner(entries: list):
    """The finalist with the best mean validation value on the confirmation seeds (never a test
    number), among those that leave no class at zero recall on any seed."""
    candidates = [e for e in entries if e["trial"] is not None and not math.isnan(e["confirm_valid"])
                  and not e.get("zero_recall_seeds")]
    return max(candidates, key=lambda e: e["confirm_valid"]) if candidates else None


def answer(entries: list, table: pd.DataFrame, monitor: str) -> str:
    """The report's first line."""
    best = winner(entries)
    zero = [e["label"] for e in entries if e["trial"] is not None and e.get("zero_recall_seeds")]
    passed = f" (left out for a class at zero recall: {'; '.join(zero)})" if zero else ""
    if best is None:
        return ("no finalist keeps every class above zero recall on every seed" + passed if zero
                else "no finalist was confirmed")
    row = table[table["recipe"] == best["recipe_label"]].iloc[0]
    said = (f"{best['label']}: test bacc {metrics.format_value(row['test_bacc_mean'], row['test_bacc_ci_low'], row['test_bacc_ci_high'])}, "
            f"worst class recall {best['worst_recall']:.1f} (lowest over the seeds), "
            f"{row['bacc_diff_mean']:+.1f} [{row['bacc_diff_ci_low']:.1f}, {row['bacc_diff_ci_high']:.1f}] over ERM, "
            f"p {p_text(row['p_holm'])} (paired on seeds {row['matched_seeds']}, Holm-adjusted){passed}")
    beats = recipes.excludes_zero(row) and row["bacc_diff_ci_low"] > 0 and row["p_holm"] < SIGNIFICANCE
    return said if beats else (f"no recipe beats ERM beyond noise; the best by valid {monitor} on the "
                               f"confirmation seeds: {said}")


def p_text(p) -> str:
    return "= nan" if pd.isna(p) else "< 0.001" if p < 0.001 else f"= {p:.3f}"


# ---------------------------------------------------------------- figures

@plots.styled
def best_so_far_svg(study) -> str:
    """Best validation value so far against minutes since the search began."""
    done = sorted((t for t in study.trials if t.state in search.FINISHED and t.datetime_complete),
                  key=lambda t: t.datetime_complete)
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.subplots()
    if done:
        start = min(t.datetime_start for t in done)
        minutes = [(t.datetime_complete - start).total_seconds() / 60 for t in done]
        values = [t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=np.nan)
                  for t in done]
        best = np.fmax.accumulate(np.where([t.state == TrialState.COMPLETE for t in done], values, np.nan))
        pruned = [t.state == TrialState.PRUNED for t in done]
        ax.scatter([m for m, p in zip(minutes, pruned) if not p], [v for v, p in zip(values, pruned) if not p],
                   s=14, label="complete")
        ax.scatter([m for m, p in zip(minutes, pruned) if p], [v for v, p in zip(values, pruned) if p], s=14,
                   facecolors="none", edgecolors="grey", label="pruned (value when stopped)")
        ax.step(minutes, best, where="post", color="black", label="best so far")
    ax.set(xlabel="minutes since the search began", ylabel="best valid value (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return plots.svg_text(fig)


@plots.styled
def per_objective_svg(study) -> str:
    """Every trial's validation value, one column per recipe (pruned: the value when stopped)."""
    names = list(dict.fromkeys(t.params.get("recipe") for t in study.trials if t.params.get("recipe")))
    fig = Figure(figsize=(max(4.0, 0.7 * len(names) + 2), 3.6))
    ax = fig.subplots()
    for x, name in enumerate(names):
        for state, style in ((TrialState.COMPLETE, {"color": "C0"}),
                             (TrialState.PRUNED, {"facecolors": "none", "edgecolors": "grey"})):
            values = [t.value if state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=np.nan)
                      for t in study.trials if t.state == state and t.params.get("recipe") == name]
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0] * len(values)
            ax.scatter(np.add(x, jitter), values, s=14, **style)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="valid value (%)")
    ax.grid(alpha=0.3, axis="y")
    return plots.svg_text(fig)


def importances_html(study) -> str:
    """Optuna's parameter importances over the complete trials, as a table: only with at least
    MIN_TRIALS_FOR_IMPORTANCES of them."""
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < MIN_TRIALS_FOR_IMPORTANCES:
        return (f'<p class="note">No parameter importances: {complete} complete trials, and they mean something '
                f"only from {MIN_TRIALS_FOR_IMPORTANCES} on (a forest fitted to fewer ranks noise).</p>")
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:
        return f'<p class="note">Parameter importances need more complete trials ({html.escape(str(e))}).</p>'
    rows = "".join(f'<tr><td class="name">{html.escape(k)}</td><td>{v:.2f}</td></tr>' for k, v in found.items())
    return ('<table><tr><th class="name">parameter</th><th>importance</th></tr>' + rows + "</table>"
            "<p class=\"note\">Optuna's parameter importances (optuna.importance, its default evaluator) over the complete "
            "trials; a recipe's own parameters are drawn only by its trials, so few trials stand behind them.</p>")


def finalists_html(rows: list) -> str:
    heads = ["rank", "trial", "recipe", "search valid", "confirm valid", "seeds", "test bacc", "worst class recall",
             "&Delta;bacc vs ERM", "p (Holm)", "note"]
    out = ["<table><tr>" + "".join(f'<th class="{"name" if h == "recipe" else ""}">{h}</th>' for h in heads) + "</tr>"]
    for row in rows:
        cells = [row["rank"], "-" if row["trial"] is None else row["trial"], row["recipe"],
                 metrics.format_value(row["search_valid"]), metrics.format_value(row["confirm_valid_mean"]),
                 row["seeds"], metrics.format_value(row["test_bacc_mean"], row["test_bacc_ci_low"],
                                                    row["test_bacc_ci_high"]),
                 metrics.format_value(row["worst_class_recall"]),
                 "baseline" if row["rank"] == "baseline" else metrics.format_value(
                     row["bacc_diff_mean"], row["bacc_diff_ci_low"], row["bacc_diff_ci_high"]),
                 "-" if row["rank"] == "baseline" or pd.isna(row["p_holm"]) else f"{row['p_holm']:.3f}", row["note"]]
        out.append("<tr>" + "".join(f'<td class="{"name" if i == 2 else ""}">{html.escape(str(c))}</td>'
                                    for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(out + ["</table>"])


def drawn(study) -> str:
    """"LA (4), ERM (2)": the recipes the finished trials drew, most drawn first, and how often."""
    counts = Counter(t.params.get("recipe") for t in study.get_trials(deepcopy=False, states=search.FINISHED))
    return ", ".join(f"{recipe} ({n})" for recipe, n in counts.most_common()) or "none"


def build_page(settings, study, first_line: str, rows: list, grouped, table, baseline: str, seeds: list) -> str:
    figures = report_page._Figures()
    counts = search.state_counts(study)
    parts = [f"<h1>{html.escape(first_line)}</h1>",
             f'<p class="meta">{html.escape(settings.dataset)}: {counts[TrialState.COMPLETE]} complete and '
             f"{counts[TrialState.PRUNED]} pruned trials drew {html.escape(drawn(study))} (trials each; "
             f"{len(settings.recipes)} recipes in the space), {settings.epochs} epochs each, chosen on validation; "
             f"the best {settings.finalists} retrained with ERM on seeds {' '.join(map(str, seeds))} and tested "
             f"once; written by 7_search.py</p>",
             "<h2>The search</h2>",
             figures.figure(best_so_far_svg(study), "best validation value so far against time"),
             figures.figure(per_objective_svg(study), "validation value of every trial, by recipe"),
             "<h2>Which parameters mattered</h2>", importances_html(study),
             "<h2>Finalists on fresh seeds</h2>", f'<div class="wide">{finalists_html(rows)}</div>',
             "<h2>Recipes (as 4_report.py computes them)</h2>",
             f'<div class="wide">{report_page.recipes_html(table, False, False, baseline)}</div>',
             report_page.HOW_TO_READ]
    curves = [(r.label, [runs.read_log(d, "valid") for d in r.run_dirs]) for r in grouped]
    parts.append(figures.figure(plots.valid_bands_svg(curves), "finalists' validation curves on the confirmation "
                                                               "seeds, mean \u00b1 one standard deviation"))
    tested = [(r.label, [pd.read_csv(d / "per_class.csv", dtype={"class": str}) for d in r.run_dirs
                         if (d / "per_class.csv").exists()]) for r in grouped]
    parts.append(figures.figure(plots.per_class_recall_svg([t for t in tested if t[1]]),
                                "finalists' per-class test recall, mean over the confirmation seeds"))
    title = html.escape(f"Recipe search: {settings.dataset}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>{report_page.STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def write_results(settings, say=print) -> str:
    """Every file of the answer into the search folder; returns the first line."""
    folder = Path(settings.search_dir)
    study = search_storage.load(settings, settings.study)
    files.write_csv(folder / "trials.csv", trials_rows(study, settings))
    written = ["trials.csv"]
    say(f"trials drew {drawn(study)} (of {len(settings.recipes)} recipes in the space)")
    if not settings.finalists:
        say(f"wrote trials.csv into {folder} (no confirmation: --finalists 0)")
        return ""
    entries, by_entry, seeds = search.confirmation_runs(settings)
    if not seeds:
        say(f"wrote trials.csv into {folder} (no confirmation: --minutes {settings.minutes:g} left no time for "
            f"one, see above); the best trial on validation: {entries[0]['label'] if len(entries) > 1 else 'none'}")
        return ""
    entries, grouped, table, summaries, baseline = confirmation(settings, entries, by_entry)
    rows = finalists_rows(entries, table)
    files.write_csv(folder / "finalists.csv", rows)
    files.write_csv(folder / "recipes.csv", table.to_dict("records"))
    monitor = runs.read_record(entries[0]["run_dirs"][0]).monitor if entries[0]["run_dirs"] else "bacc"
    first_line = answer(entries, table, monitor)
    report_page.write_page(folder / "report.html", build_page(settings, study, first_line, rows, grouped, table,
                                                              baseline, seeds))
    written += ["finalists.csv", "recipes.csv", "report.html"]
    say(recipes.format_recipes(table))
    say(first_line)
    say(f"wrote {', '.join(written)} into {folder}")
    return first_line
