"""Seeds make a recipe: runs that differ only in --seed (and in options that do not change what is
trained) are repeats of one experiment. Their spread says how much of a difference between two
objectives is luck, and seeds that two recipes share allow a paired comparison.

A recipe is the run's args.json minus NEUTRAL keys (and minus `precision` when it was left to
auto). Everything else, unknown keys included, tells recipes apart: a key this module does not know
splits runs rather than silently pooling runs that may differ.
"""
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from toolkit import plan, runs
from toolkit.cli import UserError

# args.json keys that do not change the result: the options declared so in toolkit/plan.py's OPTIONS
# (the seed, where and how it ran, bookkeeping), and what a run records beside its options:
# device_used, precision_used (see recipe_settings), versions; derived from other keys: model_name
# (model_index), mean and std (the training images), cosine_scale (the objective and --ldam-s).
# Not neutral: every other option (the objectives' flags too, also those of other objectives:
# conservative), processes (the batch is per process), class_names and class_counts (another split
# of the data is another experiment), and any key this module does not know.
NEUTRAL = frozenset({o.dest for o in plan.OPTIONS if not o.recipe} | {
    "device_used", "precision_used", "versions", "model_name", "mean", "std", "cosine_scale"})
METRICS = ("test_acc", "test_bacc", "test_macro_f1", "test_min_recall")
SEED_INTERVAL, RUN_INTERVAL = "t over seeds", "bootstrap of 1 run"  # recipes.csv's `interval` column
CONFIDENCE = 0.95


def recipe_settings(args: dict, defaults: dict | None = None) -> dict:
    """What makes a run's recipe: its args.json without the neutral keys. `defaults` (the
    training parser's) fills keys that an older run's args.json lacks: it ran with what is now
    the default, unless the default changed since."""
    settings = {**(defaults or {}), **args}
    if settings.get("precision") == "auto":
        settings.pop("precision")
    if settings.get("pretrained"):
        settings["pretrained"] = started_from(settings["pretrained"], defaults)
    return {key: value for key, value in sorted(settings.items()) if key not in NEUTRAL}


def started_from(pretrained: str, defaults: dict | None = None):
    """What a --pretrained start means to a recipe. A run directory of this toolkit, or a checkpoint
    in one (a two-stage recipe's second stage, e.g. MiSLAS), stands for that run's recipe, its seed
    left out, so that second stages started from the first stages of seeds 0, 1, 2 are repeats of
    one recipe. When that run's args.json cannot be read from here, its path with the run's
    date-time replaced by * (and a best checkpoint's value by <best>) stands for it; any other file
    is its path."""
    path = Path(pretrained)
    run_dir = path if (path / "args.json").is_file() or runs.DATETIME_PATTERN.fullmatch(path.name) else path.parent
    if (run_dir / "args.json").is_file():
        return {"run of": run_dir.parent.name, **recipe_settings(runs.read_args(run_dir), defaults)}
    if not runs.DATETIME_PATTERN.fullmatch(run_dir.name):
        return pretrained
    if run_dir == path:
        return (run_dir.parent / "*").as_posix()
    name = "<best>.pth" if runs.BEST_CHECKPOINT.fullmatch(path.name) else path.name
    return (run_dir.parent / "*" / name).as_posix()


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Recipe:
    model: str
    dataset: str
    objective: str  # the folder name of its runs, e.g. LDAM-DRW
    settings: dict
    run_dirs: list = field(default_factory=list)
    label: str = ""  # the objective, with what sets it apart from recipes of the same objective

    @property
    def key(self) -> tuple:
        return (self.model, self.dataset, self.objective, _canonical(self.settings))


def _shown(value) -> str:
    """A setting in a label: a search's drawn float to 4 significant digits (lr=0.0307, not 17)."""
    text = value if isinstance(value, str) else f"{value:.4g}" if isinstance(value, float) else _canonical(value)
    return text if len(text) <= 24 else text[:21] + "..."


def group_runs(run_dirs: list, defaults: dict | None = None) -> list:
    """The recipes of `run_dirs` (run directories, each holding args.json), in the order their
    first runs come; runs in each recipe keep their order."""
    found = {}
    for run_dir in run_dirs:
        args = runs.read_args(run_dir)
        recipe = Recipe(args.get("model_name", "?"), args.get("dataset", "?"), runs.recipe_folder(run_dir),
                        recipe_settings(args, defaults))
        found.setdefault(recipe.key, recipe).run_dirs.append(Path(run_dir))
    recipes = list(found.values())
    for recipe in recipes:
        namesakes = [r for r in recipes if (r.model, r.dataset, r.objective) == (recipe.model, recipe.dataset,
                                                                                recipe.objective)]
        differing = [k for k, usual in usual_settings(namesakes).items()
                     if _canonical(recipe.settings.get(k)) != usual]
        recipe.label = recipe.objective + (
            " (" + ", ".join(f"{k}={_shown(recipe.settings.get(k))}" for k in differing) + ")" if differing else "")
    return recipes


def usual_settings(namesakes: list) -> dict:
    """Each setting that varies among recipes of one objective, and the value most of their runs
    have (ties: the first recipe's). A label shows only where its recipe departs from these, so a
    setting all of them share, or that only another recipe changes, is not repeated in every
    label; two recipes differ somewhere, and there at least one of them departs: labels stay
    distinct."""
    keys = sorted({k for r in namesakes for k in r.settings})
    usual = {}
    for key in keys:
        runs_of = Counter()  # counted in runs: the value most runs have is the usual one
        for r in namesakes:
            runs_of[_canonical(r.settings.get(key))] += len(r.run_dirs)
        if len(runs_of) > 1:
            usual[key] = runs_of.most_common(1)[0][0]
    return usual


def finished(run_dir: Path, summary: dict) -> bool:
    """Whether a run trained all its epochs or stopped early by --early-stop (from args.json and
    runs.run_summary): a run still training, or stopped by hand, is not a repeat of its recipe."""
    args = runs.read_args(run_dir)
    epochs = summary.get("epochs", 0)
    if epochs >= args.get("epochs", 0):
        return True
    patience, best = args.get("early_stop"), summary.get("best_epoch")
    return bool(patience) and not pd.isna(best) and epochs - best >= patience


def t_interval(values, confidence=CONFIDENCE) -> tuple:
    """(mean, std, ci_low, ci_high) of `values` (NaN ignored): Student-t interval of the mean;
    std and the interval are NaN with fewer than two values."""
    values = np.asarray([v for v in values if not pd.isna(v)], dtype=np.float64)
    if len(values) == 0:
        return (math.nan,) * 4
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, mean - half, mean + half


def _seeds_text(seeds) -> str:
    return " ".join(str(s) for s in sorted(set(seeds)))


def recipe_row(recipe: Recipe, summaries: list) -> dict:
    """recipes.csv's row of one recipe, from runs.run_summary of each of its runs."""
    seeds = [runs.read_args(d).get("seed") for d in recipe.run_dirs]
    row = {"model": recipe.model, "dataset": recipe.dataset, "objective": recipe.objective, "recipe": recipe.label,
           "runs": len(recipe.run_dirs), "tested": sum(not pd.isna(s.get("test_bacc")) for s in summaries),
           "seeds": _seeds_text(seeds)}
    monitor = summaries[0].get("monitor", "acc")  # part of the recipe: the same for all its runs
    for column, values in [*[(m, [s.get(m) for s in summaries]) for m in METRICS],
                           (f"best_valid_{monitor}", [s.get("best_valid") for s in summaries])]:
        for end, value in zip(("mean", "std", "ci_low", "ci_high"), t_interval(values)):
            row[f"{column}_{end}"] = value
    tested = [s for s in summaries if not pd.isna(s.get("test_bacc"))]
    one_run = len(tested) == 1 and not pd.isna(tested[0].get("test_bacc_ci_low", math.nan))
    row["interval"] = RUN_INTERVAL if one_run else SEED_INTERVAL
    if one_run:  # one run has no spread over seeds, but its test has a bootstrap interval
        for m in METRICS:
            row[f"{m}_ci_low"] = tested[0].get(f"{m}_ci_low", math.nan)
            row[f"{m}_ci_high"] = tested[0].get(f"{m}_ci_high", math.nan)
    row["runs_at_zero_recall"] = sum(s.get("test_min_recall") == 0 for s in summaries)
    return row


def per_seed(recipe: Recipe, summaries: list, metric="test_bacc") -> dict:
    """{seed: metric} over the recipe's runs that have it; repeats of a seed are averaged."""
    found = {}
    for run_dir, summary in zip(recipe.run_dirs, summaries):
        if not pd.isna(summary.get(metric)):
            found.setdefault(runs.read_args(run_dir).get("seed"), []).append(summary[metric])
    return {seed: float(np.mean(values)) for seed, values in found.items()}


def paired_difference(values: dict, baseline: dict, confidence=CONFIDENCE) -> dict:
    """recipe - baseline on the seeds both have ({seed: value} each): the mean difference, its
    Student-t interval and the paired t-test's p-value (scipy.stats.ttest_rel); seeds that only one
    of them has are left out. Interval and p are NaN with fewer than two matched seeds."""
    matched = sorted(set(values) & set(baseline), key=lambda s: (str(type(s)), s))
    ours, theirs = [values[s] for s in matched], [baseline[s] for s in matched]
    mean, _, low, high = t_interval(np.subtract(ours, theirs)) if matched else (math.nan,) * 4
    p_value = math.nan
    if len(matched) >= 2:
        with warnings.catch_warnings():  # identical differences: scipy warns and answers nan or 0
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(stats.ttest_rel(ours, theirs).pvalue)
    return {"bacc_diff_mean": mean, "bacc_diff_ci_low": low, "bacc_diff_ci_high": high, "p_value": p_value,
            "matched_seeds": _seeds_text(matched)}


def holm(p_values: list) -> list:
    """Holm's step-down adjustment of p-values (NaN stays NaN): with many recipes against one
    baseline, some raw p-values fall below 0.05 by chance alone."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not pd.isna(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted


def find_baseline(recipes: list, name: str, model: str, dataset: str):
    """The recipe named `name` (an objective folder name, or a recipe label) of that model and
    dataset; None when it has none. Several recipes of that objective need the label."""
    group = [r for r in recipes if (r.model, r.dataset) == (model, dataset)]
    exact = [r for r in group if r.label == name]
    candidates = exact or [r for r in group if r.objective == name]
    if len(candidates) > 1:
        example = min((r.label for r in candidates), key=len)
        raise UserError(f"--baseline {name}: {len(candidates)} recipes of {model} on {dataset} are {name}; pass the "
                        f"label of one, from the recipe column of recipes.csv, e.g. --baseline '{example}'")
    return candidates[0] if candidates else None


def recipes_table(recipes: list, summaries: dict, baseline: str | None = None) -> pd.DataFrame:
    """One row per recipe (recipes.csv); `summaries` maps a run directory to its run_summary.
    With `baseline`, each recipe is compared with the baseline recipe of its model and dataset."""
    rows = [recipe_row(r, [summaries[d] for d in r.run_dirs]) for r in recipes]
    if baseline is not None:
        if not any(r.objective == baseline or r.label == baseline for r in recipes):
            raise UserError(f"--baseline {baseline}: no such recipe; objectives here: "
                            f"{', '.join(dict.fromkeys(r.objective for r in recipes))} (each recipe's label is in "
                            f"the recipe column of recipes.csv)")
        for recipe, row in zip(recipes, rows):
            reference = find_baseline(recipes, baseline, recipe.model, recipe.dataset)
            empty = {"bacc_diff_mean": math.nan, "bacc_diff_ci_low": math.nan, "bacc_diff_ci_high": math.nan,
                     "p_value": math.nan, "matched_seeds": ""}
            if reference is None or reference is recipe:
                row.update(empty, baseline=reference is recipe)
                continue
            row.update(paired_difference(per_seed(recipe, [summaries[d] for d in recipe.run_dirs]),
                                         per_seed(reference, [summaries[d] for d in reference.run_dirs])),
                       baseline=False)
        table = pd.DataFrame(rows)
        table["p_holm"] = np.nan
        for _, group in table.groupby(["model", "dataset"], sort=False):
            table.loc[group.index, "p_holm"] = holm(list(group["p_value"]))
        return table
    return pd.DataFrame(rows)


def excludes_zero(row) -> bool:
    """The interval of the difference with the baseline lies wholly above or below 0."""
    low, high = row.get("bacc_diff_ci_low"), row.get("bacc_diff_ci_high")
    return not pd.isna(low) and not pd.isna(high) and (low > 0 or high < 0)


def median_run(recipe: Recipe, summaries: dict, metric="test_bacc"):
    """The run of median `metric` among the recipe's tested runs (the lower one of the two middle
    runs of an even count; ties by run order); None when none is tested."""
    tested = [(summaries[d][metric], i, d) for i, d in enumerate(recipe.run_dirs)
              if not pd.isna(summaries[d].get(metric))]
    if not tested:
        return None
    return sorted(tested)[(len(tested) - 1) // 2][2]


def format_recipes(table: pd.DataFrame) -> str:
    """The recipes table as text, sorted by mean test bacc: `mean [95% CI]` over the seeds; with a
    baseline, the paired difference and a `*` where its interval excludes 0."""
    from toolkit.metrics import format_value
    compared = "bacc_diff_mean" in table
    rows = []
    for _, row in table.sort_values("test_bacc_mean", ascending=False, na_position="last", kind="stable").iterrows():
        runs_text = str(row["runs"]) if row["tested"] == row["runs"] else f"{row['runs']} ({row['tested']} tested)"
        line = {"recipe": row["recipe"], "runs": runs_text, "seeds": str(row["seeds"])}
        for metric in ("test_bacc", "test_acc", "test_macro_f1", "test_min_recall"):  # the sorting one first
            line[metric.replace("test_", "test ").replace("_", " ")] = format_value(
                row[f"{metric}_mean"], row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high"))
        line["test min recall"] += " !" if row.get("runs_at_zero_recall", 0) else ""
        line["interval"] = row.get("interval", SEED_INTERVAL)
        if compared:
            if row.get("baseline") is True:
                line.update({"bacc diff vs baseline": "baseline", "p": "", "": ""})
            else:
                line.update({"bacc diff vs baseline": format_value(row["bacc_diff_mean"], row["bacc_diff_ci_low"],
                                                                   row["bacc_diff_ci_high"]),
                             "p": "-" if pd.isna(row["p_value"]) else f"{row['p_value']:.3f}",
                             "": "*" if excludes_zero(row) else ""})
        rows.append(line)
    if len(table) and len(set(table["model"])) * len(set(table["dataset"])) > 1:
        for line, (_, row) in zip(rows, table.sort_values("test_bacc_mean", ascending=False, na_position="last",
                                                           kind="stable").iterrows()):
            line["recipe"] = f"{row['model']} {row['dataset']} {line['recipe']}"
    frame = pd.DataFrame(rows)
    width = max([len("recipe")] + [len(line["recipe"]) for line in rows])
    frame["recipe"] = frame["recipe"].str.ljust(width)
    text = frame.to_string(index=False, justify="left")
    notes = ["recipes: mean over the seeds [95% Student-t interval]; a recipe of one tested run: that run's number "
             "[its 95% bootstrap interval over the test images] (interval: bootstrap of 1 run); min recall: the worst "
             "class's test recall"]
    if (table.get("runs_at_zero_recall", pd.Series(dtype=int)) > 0).any():
        notes.append("! a class at 0 test recall (never predicted right) in at least one seed of the recipe")
    if compared:
        notes.append("bacc diff: recipe - baseline, paired on matched seeds [95% interval], p: paired t-test; "
                     "* the interval excludes 0")
    return text + "\n" + "\n".join(notes)
