"""Seeds make a recipe: grouping runs, intervals over seeds, the paired test against a baseline,
4_report.py's recipes.csv and its self-contained report.html. The runs are fabricated (args.json,
valid.csv, test_metrics.csv, per_class.csv, confusion_matrix.csv): no training needed."""
import html.parser
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toolkit import plan, recipes, runs

CLASSES = ["alpha", "<em>beta</em> & co", "gamma"]  # a name that must be escaped in the page
ARGS = {"model_index": 42, "dataset": "demo", "objective": "ERM", "lr": 0.1, "epochs": 3, "batchsize": 32,
        "height": 32, "width": 32, "lrstep": [2], "lrstepgamma": 0.2, "warmup": False, "momentum": 0.9,
        "weight_decay": 5e-4, "monitor": "acc", "early_stop": None, "sampler": "instance", "drs": None,
        "seed": 0, "deterministic": False, "resume": None, "workers": 2, "device": "auto", "precision": "auto",
        "compile": False, "cache_gb": 4.0, "pretrained": None, "freeze_backbone": False, "dry_run": False,
        "no_progress": True, "data_root": "/data", "logs_root": "/logs", "drw": None, "la_tau": 1.0,
        "model_name": "ResNet32", "class_names": CLASSES, "class_counts": [30, 10, 3], "mean": [0.5] * 3,
        "std": [0.2] * 3, "cosine_scale": None, "precision_used": "bf16", "device_used": "cpu", "processes": 1,
        "versions": {"torch": "2"}}


def fake_run(logs: Path, objective="ERM", seed=0, bacc=80.0, stamp=None, trained=None, tested=True,
             **changes) -> Path:
    """A run directory with its files, finished (or, with `trained` below its epochs, unfinished)."""
    args = {**ARGS, "objective": objective.removesuffix("-DRW"), "seed": seed, **changes}
    stamp = stamp or f"2026-01-01-00-{len(list(logs.rglob('args.json'))):02d}-{seed:02d}"
    run_dir = logs / args["model_name"] / args["dataset"] / objective / stamp
    run_dir.mkdir(parents=True)
    epochs = args["epochs"] if trained is None else trained
    (run_dir / "args.json").write_text(json.dumps(args))
    rng = np.random.default_rng(seed + int(bacc * 10))
    valid = pd.DataFrame({"epoch": range(1, epochs + 1), "loss": np.linspace(2, 1, epochs),
                          "acc": np.linspace(40, bacc + 5, epochs) + rng.normal(0, 1, epochs),
                          "top5acc": 100.0, "lr": 0.1, "bacc": np.linspace(30, bacc, epochs),
                          "macro_f1": np.linspace(25, bacc - 2, epochs)})
    valid.to_csv(run_dir / "valid.csv", index=False)
    if tested:
        pd.DataFrame([{"split": "test", "checkpoint": "1.00.pth", "acc": bacc + 5, "bacc": bacc,
                       "macro_f1": bacc - 2}]).to_csv(run_dir / "test_metrics.csv", index=False)
        recall = [95.0, bacc, bacc - 20]
        pd.DataFrame({"class": CLASSES, "train_count": [30, 10, 3], "support": [10, 5, 2], "precision": 80.0,
                      "recall": recall, "f1": 80.0, "auc": 90.0}).to_csv(run_dir / "per_class.csv", index=False)
        confusion = [[9, 1, 0], [1, 4, 0], [0, 1, 1]]
        pd.DataFrame([{"true \\ predicted": n, **dict(zip(CLASSES, row))} for n, row in zip(CLASSES, confusion)]
                     ).to_csv(run_dir / "confusion_matrix.csv", index=False)
    return run_dir


def grouped(logs, defaults=None):
    return recipes.group_runs(runs.list_runs(logs), defaults)


def summaries_of(found):
    return {d: runs.run_summary(d) for r in found for d in r.run_dirs}


# ---------------------------------------------------------------- grouping

def test_runs_differing_in_seed_and_where_they_ran_are_one_recipe(tmp_path):
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=1, device="cuda:1", device_used="cuda:1", workers=8, data_root="/elsewhere",
             no_progress=False, precision_used="fp16", compile=True, cache_gb=1.0, deterministic=True,
             versions={"torch": "3"}, mean=[0.4] * 3)
    fake_run(tmp_path, seed=2, resume="2026-01-01-00-00-00", logs_root="/other")
    found = grouped(tmp_path)
    assert len(found) == 1 and len(found[0].run_dirs) == 3 and found[0].label == "ERM"


def test_a_run_differing_in_lr_is_another_recipe_with_its_own_label(tmp_path):
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=1)
    fake_run(tmp_path, seed=0, lr=0.05)
    fake_run(tmp_path, objective="CCE", seed=0)
    found = grouped(tmp_path)
    assert [(r.objective, len(r.run_dirs)) for r in found] == [("ERM", 2), ("ERM", 1), ("CCE", 1)]
    assert [r.label for r in found] == ["ERM", "ERM (lr=0.05)", "CCE"]  # what sets it apart from most runs
    table = recipes.recipes_table(found, summaries_of(found))
    assert list(table["objective"]) == ["ERM", "ERM", "CCE"]  # the folder name, as the issue asks
    assert table["recipe"].is_unique


def test_a_drawn_float_is_labelled_with_four_significant_digits(tmp_path):
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=1)
    fake_run(tmp_path, seed=0, lr=0.030698533971341257, weight_decay=0.0010469794988066708)
    assert [r.label for r in grouped(tmp_path)] == ["ERM", "ERM (lr=0.0307, weight_decay=0.001047)"]


@pytest.mark.parametrize("change", [{"precision": "fp32"}, {"processes": 2}, {"epochs": 4},
                                    {"class_counts": [31, 10, 3]}, {"ccegamma": 2.0}, {"early_stop": 5}])
def test_what_changes_the_result_splits_recipes(tmp_path, change):
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=1, **change)
    assert len(grouped(tmp_path)) == 2


def test_defaults_fill_keys_an_older_run_lacks(tmp_path):
    fake_run(tmp_path, seed=0)
    older = fake_run(tmp_path, seed=1)
    args = json.loads((older / "args.json").read_text())
    del args["sampler"]
    (older / "args.json").write_text(json.dumps(args))
    assert len(grouped(tmp_path)) == 2  # unknown: not pooled
    assert len(grouped(tmp_path, {"sampler": "instance"})) == 1


def test_the_neutral_keys_are_options_of_1_train():
    parser = plan.build_parser()
    options = {a.dest for a in parser._actions}
    recorded = {"device_used", "precision_used", "versions", "model_name", "mean", "std", "cosine_scale"}
    assert recipes.NEUTRAL - recorded <= options  # no typo in the list
    for changes_the_result in ("lr", "epochs", "batchsize", "objective", "sampler", "drw", "la_tau", "monitor",
                               "pretrained", "freeze_backbone", "early_stop", "weight_decay", "height"):
        assert changes_the_result in options and changes_the_result not in recipes.NEUTRAL


# ---------------------------------------------------------------- numbers

def with_test_numbers(run_dir, **numbers):
    """The run's test_metrics.csv with more columns (2_test.py's intervals, min_recall)."""
    scores = pd.read_csv(run_dir / "test_metrics.csv")
    scores.assign(**numbers).to_csv(run_dir / "test_metrics.csv", index=False)


def test_a_one_run_recipe_shows_its_bootstrap_interval_labelled_as_such(tmp_path):
    with_test_numbers(fake_run(tmp_path, objective="CCE", bacc=70.0), bacc_ci_low=61.5, bacc_ci_high=78.25,
                      min_recall=50.0, min_recall_ci_low=0.0, min_recall_ci_high=100.0, min_recall_class="gamma")
    for seed, bacc in enumerate([80.0, 82.0, 84.0]):
        with_test_numbers(fake_run(tmp_path, seed=seed, bacc=bacc), bacc_ci_low=1.0, bacc_ci_high=2.0,
                          min_recall=[10.0, 0.0, 20.0][seed])
    found = grouped(tmp_path)
    table = recipes.recipes_table(found, summaries_of(found)).set_index("objective")
    cce, erm = table.loc["CCE"], table.loc["ERM"]
    assert (cce["test_bacc_mean"], cce["test_bacc_ci_low"], cce["test_bacc_ci_high"]) == (70.0, 61.5, 78.25)
    assert cce["interval"] == recipes.RUN_INTERVAL and erm["interval"] == recipes.SEED_INTERVAL
    half = stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # three seeds: the t interval, not any run's bootstrap
    assert (erm["test_bacc_ci_low"], erm["test_bacc_ci_high"]) == pytest.approx((82 - half, 82 + half))
    assert erm["test_min_recall_mean"] == pytest.approx(10.0) and erm["runs_at_zero_recall"] == 1
    assert cce["runs_at_zero_recall"] == 0
    text = recipes.format_recipes(table.reset_index()).splitlines()
    erm_line, cce_line = text[1], text[2]
    assert "[61.50, 78.25]" in cce_line and cce_line.rstrip().endswith(recipes.RUN_INTERVAL)
    assert "70.00 [61.50, 78.25]" in cce_line  # not [-, -]: this test wrote no interval of acc, macro F1
    assert "10.00 [" in erm_line and "] !" in erm_line and "] !" not in cce_line
    assert any(line.startswith("! a class at 0 test recall") for line in text)
    from toolkit import report_page
    page = report_page.recipes_html(table.reset_index(), False, False)
    assert ">seed list</th>" in page and ">test min recall</th>" in page and ">seeds</th>" not in page
    assert ">0, 1, 2</td>" in page and ">0 (interval: bootstrap of the run)</td>" in page
    assert "[61.50, 78.25]" in page and "10.00 [" in page and "(a class at 0 in some seed)" in page


def test_mean_std_and_student_t_interval_over_seeds(tmp_path):
    for seed, bacc in enumerate([80.0, 82.0, 84.0]):
        fake_run(tmp_path, seed=seed, bacc=bacc)
    fake_run(tmp_path, objective="CCE", seed=0, bacc=70.0)
    found = grouped(tmp_path)
    table = recipes.recipes_table(found, summaries_of(found)).set_index("objective")
    erm = table.loc["ERM"]
    half = stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # 4.303 * 2 / sqrt(3) = 4.97
    assert erm["runs"] == 3 and erm["seeds"] == "0 1 2"
    assert (erm["test_bacc_mean"], erm["test_bacc_std"]) == pytest.approx((82.0, 2.0))
    assert (erm["test_bacc_ci_low"], erm["test_bacc_ci_high"]) == pytest.approx((82 - half, 82 + half))
    assert erm["test_acc_mean"] == pytest.approx(87.0) and erm["test_macro_f1_mean"] == pytest.approx(80.0)
    best = [pd.read_csv(d / "valid.csv")["acc"].max() for d in found[0].run_dirs]
    assert erm["best_valid_acc_mean"] == pytest.approx(np.mean(best))
    cce = table.loc["CCE"]  # one run: a mean, no spread
    assert cce["test_bacc_mean"] == 70.0 and all(math.isnan(cce[f"test_bacc_{e}"]) for e in ("std", "ci_low",
                                                                                               "ci_high"))


def test_paired_difference_equals_scipy_on_matched_seeds_and_ignores_the_rest():
    ours = {0: 84.0, 1: 80.5, 2: 88.0, 3: 10.0}
    base = {0: 81.0, 1: 79.0, 2: 83.0, 7: 99.0}
    got = recipes.paired_difference(ours, base)
    expected = stats.ttest_rel([84.0, 80.5, 88.0], [81.0, 79.0, 83.0])
    diffs = np.array([3.0, 1.5, 5.0])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert got["matched_seeds"] == "0 1 2"
    assert got["p_value"] == pytest.approx(expected.pvalue)
    assert got["bacc_diff_mean"] == pytest.approx(diffs.mean())
    assert (got["bacc_diff_ci_low"], got["bacc_diff_ci_high"]) == pytest.approx((diffs.mean() - half,
                                                                                  diffs.mean() + half))
    # the unmatched seeds (3 here, 7 there) change nothing
    assert recipes.paired_difference({**ours, 3: 99.0, 5: 1.0}, {**base, 7: 0.0}) == got
    # one matched seed: a difference, no interval or p
    single = recipes.paired_difference({0: 84.0}, {0: 81.0, 1: 80.0})
    assert single["bacc_diff_mean"] == 3.0 and math.isnan(single["p_value"]) and math.isnan(single["bacc_diff_ci_low"])


def test_holm_adjustment():
    assert recipes.holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)


def test_baseline_columns_in_the_table(tmp_path):
    for seed, (erm, la) in enumerate([(80.0, 84.0), (79.0, 82.0), (83.0, 88.0)]):
        fake_run(tmp_path, seed=seed, bacc=erm)
        fake_run(tmp_path, objective="LA", seed=seed, bacc=la)
    fake_run(tmp_path, objective="LA", seed=5, bacc=20.0)  # no ERM partner: left out of the pairing
    found = grouped(tmp_path)
    table = recipes.recipes_table(found, summaries_of(found), baseline="ERM").set_index("objective")
    la = table.loc["LA"]
    assert la["matched_seeds"] == "0 1 2" and la["runs"] == 4
    assert la["p_value"] == pytest.approx(stats.ttest_rel([84.0, 82.0, 88.0], [80.0, 79.0, 83.0]).pvalue)
    assert la["bacc_diff_mean"] == pytest.approx(4.0) and recipes.excludes_zero(la)  # 4 +- 2.48
    assert table.loc["ERM", "baseline"] and math.isnan(table.loc["ERM", "bacc_diff_mean"])


def test_an_unknown_or_ambiguous_baseline_is_a_user_error(tmp_path, run):
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=0, lr=0.05)
    code, _, err = run("4_report", tmp_path, "--baseline", "XYZ")
    assert code == 2 and "no such recipe" in err
    assert run("4_report", tmp_path, "--baseline", "ERM")[0] == 0  # the recipe labelled ERM
    assert run("4_report", tmp_path, "--baseline", "ERM (lr=0.05)")[0] == 0


def test_median_run_by_test_bacc(tmp_path):
    for seed, bacc in enumerate([70.0, 90.0, 80.0, 60.0]):
        fake_run(tmp_path, seed=seed, bacc=bacc)
    fake_run(tmp_path, seed=9, tested=False)
    (recipe,) = grouped(tmp_path)
    median = recipes.median_run(recipe, summaries_of([recipe]))
    assert runs.read_args(median)["seed"] == 0  # 60 70 | 80 90: the lower middle


# ---------------------------------------------------------------- 4_report.py

@pytest.fixture
def folder(tmp_path):
    logs = tmp_path / "logs"
    for seed, (erm, cce, la) in enumerate([(80.0, 79.0, 84.0), (79.0, 81.0, 82.0), (83.0, 80.0, 88.0)]):
        fake_run(logs, seed=seed, bacc=erm)
        fake_run(logs, objective="CCE", seed=seed, bacc=cce)
        fake_run(logs, objective="LA", seed=seed, bacc=la)
    fake_run(logs, objective="LDAM-DRW", seed=0, bacc=83.0, drw=2)
    fake_run(logs, objective="CCE", seed=3, trained=2, tested=False)  # still training
    return logs / "ResNet32" / "demo"


def test_report_writes_recipes_csv_and_prints_them_sorted_and_marked(folder, run):
    code, out, err = run("4_report", folder, "--baseline", "ERM")
    assert code == 0, err
    table = pd.read_csv(folder / "recipes.csv", dtype={"seeds": str, "matched_seeds": str})
    assert list(table.columns[:7]) == ["model", "dataset", "objective", "recipe", "runs", "tested", "seeds"]
    for metric in ("test_acc", "test_bacc", "test_macro_f1", "best_valid_acc"):
        assert {f"{metric}_{e}" for e in ("mean", "std", "ci_low", "ci_high")} <= set(table.columns)
    assert {"bacc_diff_mean", "bacc_diff_ci_low", "bacc_diff_ci_high", "p_value", "matched_seeds"} <= set(table.columns)
    assert set(table["objective"]) == {"ERM", "CCE", "LA", "LDAM-DRW"}
    assert table.set_index("objective").loc["CCE", "runs"] == 3  # the unfinished run is left out, and said so
    assert "left out of the recipes: 1 unfinished" in out
    recipe_lines = [line for line in out.splitlines() if line.split()[:1] in (["LA"], ["LDAM-DRW"], ["ERM"], ["CCE"])
                    and "[" in line]
    assert [line.split()[0] for line in recipe_lines] == ["LA", "LDAM-DRW", "ERM", "CCE"]  # by mean test bacc
    marked = {line.split()[0]: line.rstrip().endswith("*") for line in recipe_lines}
    assert marked == {"LA": True, "LDAM-DRW": False, "ERM": False, "CCE": False}
    assert "baseline" in recipe_lines[2]


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text, self.ids = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        self.ids += [v for k, v in attrs if k == "id"]

    def handle_data(self, data):
        self.text.append(data)


def test_report_page_is_self_contained_html_with_inline_figures(folder, run):
    assert run("4_report", folder, "--baseline", "ERM")[0] == 0
    page_text = (folder / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(page_text)
    page.close()
    assert page.tags[:1] == ["html"] and "body" in page.tags and "table" in page.tags
    # curves, per-class recall, and one confusion matrix per recipe (4), all inline
    assert page.tags.count("svg") == 2 + 4
    assert not {"script", "link", "img", "iframe", "object", "embed", "a"} & set(page.tags)
    for tag, name, value in page.attrs:
        if name in ("src", "href", "xlink:href", "srcset", "action", "rdf:resource"):
            # references within the page only; a colour bar is an SVG <image> of inline PNG data
            assert value.startswith("#") or (tag == "image" and value.startswith("data:image/png;base64,")), \
                (tag, name, value[:40])
    assert "@import" not in page_text and "url(http" not in page_text and "@font-face" not in page_text
    assert "http" not in page_text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', "")  # namespaces only, nothing to fetch
    assert len(page.ids) == len(set(page.ids))  # the inlined figures' ids do not collide
    # the class name is escaped: text, not markup
    assert "em" not in page.tags and "<em>beta</em> & co" in "".join(page.text)
    assert "How to read the intervals" in page_text and "Student-t" in page_text
    assert "LDAM-DRW" in "".join(page.text)


def test_report_page_is_the_same_on_a_rerun(folder, run):
    assert run("4_report", folder, "--baseline", "ERM")[0] == 0
    first = (folder / "report.html").read_bytes()
    assert run("4_report", folder, "--baseline", "ERM")[0] == 0
    assert (folder / "report.html").read_bytes() == first


def test_report_without_baseline_has_no_difference_columns(folder, run):
    code, out, err = run("4_report", folder)
    assert code == 0, err
    table = pd.read_csv(folder / "recipes.csv")
    assert "bacc_diff_mean" not in table and "p_value" not in table
    assert (folder / "report.html").exists() and "bacc diff" not in out


def test_a_run_from_before_an_option_groups_with_what_it_trained_with():
    """ALRP ranked pooled raw logits before --alrp-ranking and --alrp-tau existed; an older run's
    args.json lacks both, so it must not pool with runs of today's per-image default."""
    assert (plan.defaults()["alrp_ranking"], plan.defaults()["alrp_tau"]) == ("per-image", 0.5)
    older = plan.defaults_of_older_runs()
    assert (older["alrp_ranking"], older["alrp_tau"]) == ("pooled", 0.0)
    assert {k: v for k, v in older.items() if k not in ("alrp_ranking", "alrp_tau")} == \
        {k: v for k, v in plan.defaults().items() if k not in ("alrp_ranking", "alrp_tau")}


def post_hoc(run_dir, folder, bacc, **extra):
    """A 2_test.py post-hoc result folder inside a run (RUN/logit-adjusted/, RUN/tau-normalised/)."""
    (run_dir / folder).mkdir()
    pd.DataFrame([{"split": "test", "checkpoint": "1.00.pth", **extra, "acc": bacc + 5, "bacc": bacc,
                   "macro_f1": bacc - 2}]).to_csv(run_dir / folder / "test_metrics.csv", index=False)


def test_post_hoc_folders_are_recipes_of_their_own_paired_with_their_runs(tmp_path, run):
    for seed, (erm, adjusted, normalised) in enumerate([(80.0, 84.0, 81.0), (79.0, 85.0, 80.0), (83.0, 86.0, 83.0)]):
        run_dir = fake_run(tmp_path, seed=seed, bacc=erm)
        post_hoc(run_dir, "logit-adjusted", adjusted, tau=1.0)
        post_hoc(run_dir, "tau-normalised", normalised, tau_norm=0.5)
    folder = tmp_path / "ResNet32" / "demo"
    code, out, err = run("4_report", folder, "--baseline", "ERM")
    assert code == 0, err
    table = pd.read_csv(folder / "recipes.csv").set_index("objective")
    assert list(table.index) == ["ERM", "ERM+logit-adjusted", "ERM+tau-normalised"]
    assert table.loc["ERM+logit-adjusted", "runs"] == 3
    assert table.loc["ERM+logit-adjusted", "test_bacc_mean"] == pytest.approx(85.0)
    assert table.loc["ERM+logit-adjusted", "bacc_diff_mean"] == pytest.approx((4 + 6 + 3) / 3)
    assert table.loc["ERM+tau-normalised", "bacc_diff_mean"] == pytest.approx((1 + 1 + 0) / 3)
    assert table.loc["ERM+tau-normalised", "matched_seeds"] == "0 1 2"
    assert "ERM+tau-normalised" in out
    assert len(pd.read_csv(folder / "summary.csv")) == 3  # the runs themselves, once each


def test_second_stages_on_each_seeds_first_stage_run_are_one_recipe(tmp_path):
    stage1 = tmp_path / "stage1" / "ResNet32" / "demo" / "ERM"
    for seed in (0, 1):
        fake_run(tmp_path, objective="CB-MaxNorm", seed=seed,
                 pretrained=str(stage1 / f"2026-01-01-00-0{seed}-00" / "91.43.pth"), max_norm=0.1)
    fake_run(tmp_path, objective="CB-MaxNorm", seed=2, pretrained="/weights/imagenet.pth", max_norm=0.1)
    found = grouped(tmp_path)
    assert [len(r.run_dirs) for r in found] == [2, 1]
    assert found[0].settings["pretrained"] == (stage1 / "*" / "<best>.pth").as_posix()
