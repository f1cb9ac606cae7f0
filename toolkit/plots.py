"""Figures as SVG: training curves, confusion matrix, reliability diagram, comparisons of runs.

Every function writes one SVG to `path` atomically (files.write_atomically); the *_svg functions
return the SVG as text instead, to inline in an HTML page (report_page). Figures are made
without pyplot and styled per figure, so importing this module changes no global setting. Text
stays text in the SVG, so class names can be searched and copied. Rates are in percent,
as metrics.py gives them.
"""
import functools
import io
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from toolkit.files import write_atomically

# applied while each figure is drawn and saved, not globally: pyplot and its backends are never used
STYLE = {
    "svg.fonttype": "none",  # text as <text>, not paths
    "svg.hashsalt": "plots",  # same data, same file
    "text.parse_math": False,  # a class named "$5 bill" is not mathtext
}
MAX_ANNOTATED_CLASSES = 30


def styled(draw):
    """Run a figure function under STYLE."""
    @functools.wraps(draw)
    def with_style(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return with_style


def _figure(rows=1, columns=1, **options):
    """A figure and its axes, made without pyplot (so nothing global is touched)."""
    fig = Figure(figsize=options.pop("figsize", None))
    return fig, fig.subplots(rows, columns, **options)


def _save(fig, path):
    write_atomically(Path(path), lambda tmp: fig.savefig(tmp, format="svg", bbox_inches="tight",
                                                          metadata={"Date": None}))


def _plot_epochs(ax, frame, column, label, **style):
    # markers, so that a single epoch still shows
    ax.plot(frame["epoch"], frame[column], marker="o", markersize=3, label=label, **style)


def _finish_epoch_axes(ax, ylabel):
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()


@styled
def training_curves(train: pd.DataFrame, valid: pd.DataFrame, path, monitor="acc"):
    """curves.svg: loss and accuracy (%) per epoch, train and valid; the best valid `monitor` epoch marked."""
    fig, (loss_ax, acc_ax) = _figure(1, 2, figsize=(10, 4))
    _plot_epochs(loss_ax, train, "loss", "train")
    _plot_epochs(loss_ax, valid, "loss", "valid")
    _plot_epochs(acc_ax, train, "acc", "train acc")
    _plot_epochs(acc_ax, valid, "acc", "valid acc")
    if "bacc" in valid:
        _plot_epochs(acc_ax, valid, "bacc", "valid bacc")
    if monitor in valid and valid[monitor].notna().any():
        best = valid[monitor].idxmin() if monitor == "loss" else valid[monitor].idxmax()
        for ax in (loss_ax, acc_ax):
            ax.axvline(valid.loc[best, "epoch"], color="grey", linestyle=":", label=f"best valid {monitor}")
    _finish_epoch_axes(loss_ax, "loss")
    _finish_epoch_axes(acc_ax, "accuracy (%)")
    _save(fig, path)


def _row_normalised(counts) -> np.ndarray:
    """Each row divided by its total; a row with no samples stays 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _class_axis_size(num_classes, per_class=0.35, minimum=4.0) -> float:
    """Inches for an axis of class names: grows with K so 100 names stay readable."""
    return max(minimum, per_class * num_classes + 2)


@styled
def confusion_matrix(counts, class_names, path, order=None):
    """Row-normalised confusion matrix (rows true, columns predicted), classes in `order`."""
    _save(_confusion_figure(counts, class_names, order), path)


def _confusion_figure(counts, class_names, order=None, title=None):
    order = list(range(len(class_names))) if order is None else list(order)
    fractions = _row_normalised(np.asarray(counts)[np.ix_(order, order)])
    names = [class_names[i] for i in order]
    k = len(order)
    side = _class_axis_size(k)
    fig, ax = _figure(figsize=(side + 1, side))
    # vector cells, not an embedded bitmap that SVG viewers blur when they scale it
    image = ax.pcolormesh(np.arange(k + 1) - 0.5, np.arange(k + 1) - 0.5, fractions, cmap="Blues", vmin=0, vmax=1)
    ax.set_aspect("equal")
    ax.invert_yaxis()  # the first class on top, as in a table
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    if k <= MAX_ANNOTATED_CLASSES:
        for (row, col), value in np.ndenumerate(fractions):
            if value > 0:
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


@styled
def reliability_diagram(bins: pd.DataFrame, ece: float, path):
    """Accuracy per confidence bin against the diagonal, with the bin counts as a faint histogram.

    `bins` is metrics.reliability_bins (percent); `ece` is in percent.
    """
    fig, ax = _figure(figsize=(5, 5))
    _reliability_axes(ax, bins, f"accuracy (ECE = {ece:.2f}%)")
    _save(fig, path)


def _reliability_axes(ax, bins: pd.DataFrame, label: str):
    centres, widths = (bins["lo"] + bins["hi"]) / 2, bins["hi"] - bins["lo"]
    counts_ax = ax.twinx()
    counts_ax.bar(centres, bins["count"], width=widths, color="grey", alpha=0.15)
    counts_ax.set_ylabel("samples")
    ax.set_zorder(counts_ax.get_zorder() + 1)  # accuracy bars in front of the histogram
    ax.patch.set_visible(False)
    ax.bar(centres, bins["accuracy"].fillna(0), width=widths, edgecolor="black", alpha=0.8, label=label)
    ax.plot([0, 100], [0, 100], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="confidence (%)", ylabel="accuracy (%)")
    ax.legend(loc="upper left")


@styled
def valid_curves(runs: list[tuple[str, pd.DataFrame]], path):
    """Validation accuracy per epoch, one line per (label, valid frame); a bacc panel when present."""
    with_bacc = any("bacc" in frame for _, frame in runs)
    panels = [("acc", "valid acc (%)")] + ([("bacc", "valid bacc (%)")] if with_bacc else [])
    fig, axes = _figure(1, len(panels), figsize=(5 * len(panels) + 1, 4), squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], panels):
        for label, frame in runs:
            if column in frame:
                _plot_epochs(ax, frame, column, label)
        _finish_epoch_axes(ax, ylabel)
    _save(fig, path)


def recall_table(runs: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Test recall (%) by class (rows, in the first frame's order) and run label (columns)."""
    classes = runs[0][1]["class"]
    return pd.DataFrame({label: frame.set_index("class")["recall"].reindex(classes).to_numpy()
                         for label, frame in runs}, index=pd.Index(classes, name="class"))


@styled
def per_class_recall(runs: list[tuple[str, pd.DataFrame]], path):
    """Per-class test recall, one series per (label, metrics.per_class frame); classes head to tail."""
    table = recall_table(runs)
    fig, ax = _figure(figsize=(_class_axis_size(len(table), per_class=0.25, minimum=6.0), 4))
    positions = np.arange(len(table))
    for label in table.columns:
        ax.plot(positions, table[label], marker="o", markersize=3, label=label, clip_on=False)
    ax.set_xticks(positions, table.index, rotation=90, fontsize=8)
    ax.set(xlabel="class (most to least frequent in training)", ylabel="test recall (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


# ---------------------------------------------------------------- figures of recipes (seeds pooled), as SVG text

BAND_ALPHA = 0.2


def svg_text(fig) -> str:
    """The figure as an <svg> element (no XML prolog, DOCTYPE or metadata: ready to inline in HTML).
    A colour bar is an embedded PNG (a data: URI), still inside the SVG."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    # the RDF metadata names creativecommons.org and purl.org: nothing a page needs, nor should point to
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)


def epoch_band(frames: list, column: str) -> pd.DataFrame:
    """mean, std (NaN for one run) and the number of runs of `column` per epoch over the frames
    that have it (an early-stopped run ends its share early)."""
    parts = [f[["epoch", column]] for f in frames if column in f and len(f)]
    values = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"epoch": [], column: []})
    grouped = values.groupby("epoch")[column]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "runs": grouped.count()})


@styled
def valid_bands_svg(recipes: list[tuple[str, list]], columns=("acc", "bacc")) -> str:
    """Validation curves of recipes, (label, [valid frame of each run]): the mean over the runs
    per epoch, a band of mean +- one standard deviation, one panel per column present."""
    columns = [c for c in columns if any(c in f for _, frames in recipes for f in frames)]
    fig, axes = _figure(1, max(1, len(columns)), figsize=(5.6 * max(1, len(columns)), 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for label, frames in recipes:
            band = epoch_band(frames, column)
            if not len(band):
                continue
            runs_text = f"{int(band['runs'].max())} run{'s' if band['runs'].max() > 1 else ''}"
            line, = ax.plot(band.index, band["mean"], marker="o", markersize=2, label=f"{label} ({runs_text})")
            spread = band["std"].fillna(0)
            ax.fill_between(band.index, band["mean"] - spread, band["mean"] + spread, color=line.get_color(),
                            alpha=BAND_ALPHA, linewidth=0)
        ax.set_title(f"valid {column}: mean \u00b1 std over seeds", fontsize=10)
        _finish_epoch_axes(ax, f"valid {column} (%)")
        ax.legend(fontsize=8, loc="lower right")
    return svg_text(fig)


@styled
def per_class_recall_svg(recipes: list[tuple[str, list]]) -> str:
    """Per-class test recall of recipes, (label, [metrics.per_class frame of each run]): the mean
    over the runs with error bars of one standard deviation; classes head to tail as in the first
    frame, the recipes side by side within each class."""
    classes = recipes[0][1][0]["class"].astype(str).tolist()
    fig, ax = _figure(figsize=(max(7.0, 0.55 * len(classes) + 2), 4.2))
    positions = np.arange(len(classes))
    width = 0.8 / max(1, len(recipes))
    for i, (label, frames) in enumerate(recipes):
        table = pd.DataFrame({n: f.assign(**{"class": f["class"].astype(str)}).set_index("class")["recall"]
                              .reindex(classes).to_numpy() for n, f in enumerate(frames)}, index=classes)
        mean, std = table.mean(axis=1), table.std(axis=1, ddof=1).fillna(0)
        offset = (i - (len(recipes) - 1) / 2) * width
        below, above = np.minimum(std, mean), np.minimum(std, 100 - mean)  # a recall lies in [0, 100]
        ax.errorbar(positions + offset, mean, yerr=[below, above], fmt="o", markersize=3, capsize=2, elinewidth=1,
                    label=f"{label} ({len(frames)} run{'s' if len(frames) > 1 else ''})", clip_on=False)
    ax.set_xticks(positions, classes, rotation=90 if len(classes) > 12 else 0, fontsize=8)
    ax.set(xlabel="class (most to least frequent in training)", ylabel="test recall (%)", ylim=(-3, 103))
    ax.set_title("per-class test recall: mean \u00b1 std over seeds", fontsize=10, pad=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return svg_text(fig)


@styled
def confusion_matrix_svg(counts, class_names, order=None, title=None) -> str:
    """confusion_matrix as SVG text, with an optional title."""
    return svg_text(_confusion_figure(counts, class_names, order, title))


_SVG_ID = re.compile(r'\bid="([^"]+)"')


def prefix_svg_ids(svg: str, prefix: str) -> str:
    """Give every id of an SVG (and every reference to one: url(#..), href="#..") a prefix, so
    that several SVGs inlined in one page cannot collide."""
    ids = set(_SVG_ID.findall(svg))
    if not ids:
        return svg

    def renamed(match):
        name = match.group(2)
        return f"{match.group(1)}{prefix}{name}" if name in ids else match.group(0)
    svg = re.sub(r'(\bid=")([^"]+)', renamed, svg)
    svg = re.sub(r"(url\(#)([^)]+)", renamed, svg)
    return re.sub(r'(href="#)([^"]+)', renamed, svg)


@styled
def active_learning_curve(curve: pd.DataFrame, path, labels=None):
    """curve.svg of 6_active.py --simulate: mean test balanced accuracy (%) against the labelled
    images, one line per strategy, a band from the lowest to the highest seed; `labels` maps a
    strategy to its legend entry."""
    labels = labels or {}
    fig, ax = _figure(figsize=(7, 4.5))
    for strategy, rows in curve.groupby("strategy", sort=False):
        by_round = rows.groupby("round").agg(labelled=("labelled", "mean"), mean=("test_bacc", "mean"),
                                             low=("test_bacc", "min"), high=("test_bacc", "max"))
        seeds = rows["seed"].nunique()
        line, = ax.plot(by_round["labelled"], by_round["mean"], marker="o", markersize=3,
                        label=f"{labels.get(strategy, strategy)}, {seeds} seed{'s' if seeds > 1 else ''}")
        ax.fill_between(by_round["labelled"], by_round["low"], by_round["high"], color=line.get_color(), alpha=0.15,
                        linewidth=0)
    ax.set(xlabel="labelled training images", ylabel="test balanced accuracy (%)",
           title="mean over seeds; band: lowest to highest seed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


@styled
def pr_curves(curves: list, class_names, path, valid_curves=None, marked=None):
    """pr_curves.svg: precision against recall (%) of each class's probability, one colour a class,
    test solid and validation dashed (`curves`, `valid_curves`: decisions.precision_recall_curves);
    `marked` = (class index, recall, precision, label) puts the operating point on its curve."""
    fig, ax = _figure(figsize=(7, 5.5))
    colours = matplotlib.colormaps["tab20" if len(class_names) > 10 else "tab10"]
    for c, name in enumerate(class_names):
        colour = colours(c % colours.N)
        if curves[c] is not None:
            ax.plot(*curves[c], color=colour, linewidth=1.2, label=str(name), drawstyle="steps-post")
        if valid_curves is not None and valid_curves[c] is not None:
            ax.plot(*valid_curves[c], color=colour, linewidth=0.8, linestyle="--", drawstyle="steps-post")
    if marked is not None:
        c, recall, precision, label = marked
        ax.plot([recall], [precision], marker="o", markersize=9, markerfacecolor="none", markeredgewidth=2,
                color=colours(c % colours.N), linestyle="none", label=label)
    ax.set(xlim=(0, 101), ylim=(0, 101), xlabel="recall (%)", ylabel="precision (%)",
           title="test (solid)" + (", validation (dashed)" if valid_curves is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(class_names) > 12 else 1, loc="lower left")
    _save(fig, path)


@styled
def reliability_before_after(before: pd.DataFrame, after: pd.DataFrame, ece_before: float, ece_after: float,
                             temperature: float, path):
    """reliability.svg of a calibrated test: accuracy per confidence bin before (left) and after
    (right) dividing the logits by the temperature; bins as metrics.reliability_bins gives them."""
    fig, axes = _figure(1, 2, figsize=(11, 5))
    _reliability_axes(axes[0], before, f"before (ECE = {ece_before:.2f}%)")
    _reliability_axes(axes[1], after, f"after, temperature {temperature:.3g} (ECE = {ece_after:.2f}%)")
    _save(fig, path)
