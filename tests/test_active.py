"""6_acquisition.py: acquisition orders on known probabilities, balanced quotas, the pseudo-label rule,
the query's files, ingesting labels into a new dataset version, and a simulated curve."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TRAIN_ARGS, write_images

from toolkit import acquisition, data, simulation, training
from toolkit.images import decode_image

# four images, three classes: each acquisition orders them differently
PROBS = np.array([[0.50, 0.50, 0.00],   # entropy 0.693, margin score 1.00, least-confidence 0.50
                  [0.40, 0.30, 0.30],   # 1.089, 0.90, 0.60
                  [0.70, 0.15, 0.15],   # 0.819, 0.45, 0.30
                  [0.55, 0.44, 0.01]])  # 0.736, 0.89, 0.45


def says_one_of_a_plural(text: str) -> list:
    """'1 images', '1 duplicates', ...: a count of one followed by a plural noun."""
    return re.findall(r"\b1 (?:[\w-]+ )?(?:images|duplicates|files|rows|labels|pseudo-labels|queries|rounds|"
                      r"strategies|seeds)\b", text)


def snapshot(folder):
    """Every file below `folder`: relative path -> content hash."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- acquisition

@pytest.mark.parametrize("method, order", [("entropy", [1, 2, 3, 0]), ("margin", [0, 1, 3, 2]),
                                           ("least-confidence", [1, 0, 3, 2])])
def test_uncertainty_acquisitions_order_known_probabilities(method, order):
    picked, scores = acquisition.select(method, PROBS, budget=4)
    assert picked.tolist() == order
    assert np.all(np.diff(scores) <= 0)
    picked, _ = acquisition.select(method, PROBS, budget=2)
    assert picked.tolist() == order[:2]


def test_entropy_scores_are_in_nats():
    scores = acquisition.acquisition_scores("entropy", PROBS)
    assert scores[1] == pytest.approx(-(0.4 * np.log(0.4) + 2 * 0.3 * np.log(0.3)))
    assert scores[0] == pytest.approx(np.log(2))


def test_random_is_reproducible_by_seed_and_differs_for_another():
    probs = np.full((50, 3), 1 / 3)
    first = acquisition.select("random", probs, 10, seed=3)[0]
    assert acquisition.select("random", probs, 10, seed=3)[0].tolist() == first.tolist()
    assert acquisition.select("random", probs, 10, seed=4)[0].tolist() != first.tolist()
    assert len(set(first.tolist())) == 10


def test_kcenter_picks_the_far_point_first():
    pool = np.array([[1.0, 0.0], [0.0, 5.0], [0.5, 0.5], [0.0, 4.5]])
    labelled = np.array([[0.0, 0.0]])
    picked, scores = acquisition.select("kcenter", np.full((4, 2), 0.5), 3, features=pool, labelled_features=labelled)
    # (0, 5) is farthest from the labelled origin; then (1, 0), 1 from the origin, beats (0, 4.5),
    # now 0.5 from (0, 5); then (0.5, 0.5) at 0.707 beats (0, 4.5) at 0.5
    assert picked.tolist() == [1, 0, 2]
    assert scores.tolist() == pytest.approx([5.0, 1.0, np.sqrt(0.5)])


def test_kcenter_without_labelled_points_starts_farthest_from_the_mean():
    pool = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0]])
    picked, _ = acquisition.kcenter_greedy(pool, None, 2)
    assert picked.tolist() == [3, 0]


def test_balanced_quotas_are_inverse_to_training_counts_and_sum_to_the_budget():
    # weights 1/100 : 1/50 : 1/10 of 16 -> 1.23, 2.46, 12.31: floors 1, 2, 12, the last unit to 2.46
    assert acquisition.balanced_quotas([100, 50, 10], [100, 100, 100], 16).tolist() == [1, 3, 12]
    # class 2 has only 2 pool images: the other 14 go 1 : 2 -> 4.67, 9.33 -> 5, 9
    assert acquisition.balanced_quotas([100, 50, 10], [100, 100, 2], 16).tolist() == [5, 9, 2]
    # a class the pool does not predict gets nothing; a budget above the pool takes the pool
    assert acquisition.balanced_quotas([100, 50, 10], [7, 0, 3], 6).tolist() == [3, 0, 3]
    assert acquisition.balanced_quotas([100, 50, 10], [1, 2, 1], 16).tolist() == [1, 2, 1]
    for budget in range(1, 30):
        assert acquisition.balanced_quotas([90, 30, 7, 7], [20, 20, 5, 9], budget).sum() == min(budget, 54)


def test_balanced_selection_fills_each_class_quota_with_its_most_uncertain():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=60)
    predicted = probs.argmax(axis=1)
    quotas = acquisition.balanced_quotas([100, 50, 10], np.bincount(predicted, minlength=3), 12)
    picked, scores = acquisition.select("entropy", probs, 12, quotas=quotas)
    assert np.bincount(predicted[picked], minlength=3).tolist() == quotas.tolist()
    entropy = acquisition.acquisition_scores("entropy", probs)
    for c in range(3):
        mine = picked[predicted[picked] == c]
        others = np.setdiff1d(np.flatnonzero(predicted == c), mine)
        assert entropy[mine].min() >= entropy[others].max()
    assert np.all(np.diff(scores) <= 0)


# ---------------------------------------------------------------- pseudo-labels

def test_pseudo_labels_keep_the_threshold_and_the_crest_cap():
    confident = [0.99, 0.985, 0.98, 0.975, 0.97, 0.965, 0.96, 0.955, 0.95, 0.99]
    rows = [[c, (1 - c) / 2, (1 - c) / 2] for c in confident]  # 10 of class 0
    rows += [[0.02, 0.97, 0.01], [0.01, 0.98, 0.01], [0.0, 0.96, 0.04], [0.0, 0.99, 0.01], [0.0, 0.95, 0.05]]
    rows += [[0.0, 0.04, 0.96], [0.0, 0.03, 0.97], [0.01, 0.01, 0.98], [0.05, 0.05, 0.90]]  # class 2; 0.90 < 0.95
    probs = np.array(rows)
    assert acquisition.crest_rates([100, 40, 10], alpha=1).tolist() == pytest.approx([0.1, 0.4, 1.0])
    indices, labels = acquisition.pseudo_labels(probs, 0.95, [100, 40, 10], alpha=1)
    # class 0 keeps floor(0.1 * 10) = 1 (its most confident, the first 0.99), class 1 floor(0.4 * 5) = 2
    # (0.99, 0.98), class 2 all 3 above the threshold
    assert sorted(indices.tolist()) == [0, 11, 13, 15, 16, 17]
    assert labels.tolist() == probs[indices].argmax(axis=1).tolist()
    assert probs[indices].max(axis=1).tolist() == sorted(probs[indices].max(axis=1), reverse=True)
    # alpha 0: the FixMatch threshold alone; excluded rows (the queried ones) never get a pseudo-label
    indices, _ = acquisition.pseudo_labels(probs, 0.95, [100, 40, 10], alpha=0, exclude=[0, 15])
    assert sorted(indices.tolist()) == [i for i in range(18) if i not in (0, 15)]
    # the most frequent class is the one capped, whatever its index
    assert acquisition.crest_rates([10, 100, 40], alpha=1).tolist() == pytest.approx([1.0, 0.1, 0.4])


# ---------------------------------------------------------------- the query

@pytest.fixture
def pool(trained_run, tmp_path):
    """12 new images, 2 copies of training images (skipped by content), a duplicate and a text file."""
    folder = tmp_path / "pool"
    write_images(folder / "batch1", 7, (200, 60, 50), seed=100)
    write_images(folder / "batch2" / "deeper", 5, (40, 60, 200), seed=101)
    train = sorted((trained_run.data / "tiny" / "train" / "beta").glob("*.png"))
    shutil.copy(train[0], folder / "known1.png")
    shutil.copy(train[1], folder / "batch1" / "known2.png")
    shutil.copy(folder / "batch1" / "img000.png", folder / "zz_duplicate.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


QUERY = ["--device", "cpu", "--no-progress", "--workers", "1"]


def test_query_writes_exactly_k_rows_skipping_images_already_in_the_dataset(trained_run, pool, tmp_path, run):
    out = tmp_path / "out"
    code, stdout, err = run("6_active", "--run", trained_run.run_dir, "--pool", pool, "--budget", 5,
                            "--output", out, "--pseudo-threshold", 0.34, *QUERY)
    assert code == 0, err
    queries = pd.read_csv(out / "queries.csv", keep_default_na=False)
    assert list(queries.columns) == ["rank", "path", "score", "predicted", "probability", "label"]
    assert queries["rank"].tolist() == [1, 2, 3, 4, 5]
    assert queries["score"].is_monotonic_decreasing
    assert (queries["label"] == "").all()
    assert queries["predicted"].isin(["alpha", "beta", "gamma"]).all()
    assert queries["probability"].between(100 / 3, 100).all()  # in %, as 5_predict.py writes it: of 3 classes
    pseudo = pd.read_csv(out / "pseudo_labels.csv")
    assert list(pseudo.columns) == ["path", "label", "probability"]
    assert (pseudo["probability"] >= 34).all()
    new_images = {str(p.resolve()) for p in pool.rglob("img*.png")}
    assert set(queries["path"]) <= new_images and set(pseudo["path"]) <= new_images
    assert not set(queries["path"]) & set(pseudo["path"])
    assert "2 already in tiny, 1 duplicate, 0 unreadable, 1 other file" in stdout
    assert not says_one_of_a_plural(stdout)
    asked = json.loads((out / "query.json").read_text())
    assert asked["acquisition"] == "entropy" and asked["budget"] == 5 and asked["checkpoint"].endswith(".pth")
    assert sorted(Path(p).name for p in asked["in_dataset"]) == ["known1.png", "known2.png"]
    assert "queries" in stdout and "pseudo-labels" in stdout and "total" in stdout

    # a second query into the same folder would overwrite labels a person may have filled in
    code, _, err = run("6_active", "--run", trained_run.run_dir, "--pool", pool, "--budget", 5, "--output", out, *QUERY)
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1


def test_query_probabilities_are_5_predicts_percents(trained_run, pool, tmp_path, run):
    out = tmp_path / "out"
    code, stdout, err = run("6_active", "--run", trained_run.run_dir, "--pool", pool, "--budget", 1,
                            "--output", out, "--pseudo-threshold", 0.34, *QUERY)
    assert code == 0, err
    assert "(1 image to label" in stdout and not says_one_of_a_plural(stdout)
    rows = pd.concat([pd.read_csv(out / "queries.csv"), pd.read_csv(out / "pseudo_labels.csv")])
    code, _, err = run("5_predict", "--run", trained_run.run_dir, "--output", tmp_path / "predictions.csv",
                       *rows["path"], "--device", "cpu", "--no-progress", "--workers", "1")
    assert code == 0, err
    predicted = pd.read_csv(tmp_path / "predictions.csv").set_index("path")["probability"]
    assert rows["probability"].tolist() == pytest.approx(predicted[rows["path"]].tolist(), abs=1e-3)


@pytest.mark.parametrize("extra", [["--acquisition", "kcenter"], ["--acquisition", "margin", "--balance"]])
def test_query_asks_for_the_pool_when_the_budget_exceeds_it(trained_run, pool, tmp_path, run, extra):
    out = tmp_path / "out"
    code, _, err = run("6_active", "--run", trained_run.run_dir, "--pool", pool, "--budget", 50, "--output", out,
                       *extra, *QUERY)
    assert code == 0, err
    queries = pd.read_csv(out / "queries.csv")
    assert len(queries) == 12 and queries["path"].is_unique  # 16 images - 2 known - 1 duplicate - 1 text file
    assert pd.read_csv(out / "pseudo_labels.csv").empty  # every image was queried


def test_query_of_a_pool_the_dataset_already_holds_is_an_error(trained_run, tmp_path, run):
    code, _, err = run("6_active", "--run", trained_run.run_dir, "--pool", trained_run.data / "tiny" / "valid",
                       "--budget", 3, "--output", tmp_path / "out", *QUERY)
    assert code == 2 and err.startswith("error: nothing to query") and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- ingest

@pytest.fixture
def labelled(tiny, tmp_path):
    """queries.csv filled in: two of three rows labelled; pseudo_labels.csv with one row the person labelled too."""
    write_images(tmp_path / "pool", 4, (90, 90, 90), seed=7)
    images = sorted((tmp_path / "pool").glob("*.png"))
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"rank": [1, 2, 3], "path": [str(p) for p in images[:3]], "score": [0.9, 0.8, 0.7],
                  "predicted": ["alpha"] * 3, "probability": [0.4] * 3,
                  "label": ["gamma", "", "beta"]}).to_csv(queries, index=False)
    pseudo = tmp_path / "pseudo_labels.csv"
    pd.DataFrame({"path": [str(images[3]), str(images[0])], "label": ["alpha", "alpha"],
                  "probability": [0.99, 0.97]}).to_csv(pseudo, index=False)
    tiny.images, tiny.queries, tiny.pseudo = images, queries, pseudo
    return tiny


def ingest_args(tiny, *extra):
    return ["--ingest", tiny.queries, "--dataset", "tiny", "--into", "tiny-r1", "--data-root", tiny.data,
            "--no-progress", *extra]


def test_ingest_writes_exactly_the_labelled_and_pseudo_rows(labelled, run):
    before = snapshot(labelled.data / "tiny")
    code, out, err = run("6_active", *ingest_args(labelled, "--pseudo", labelled.pseudo))
    assert code == 0, err
    new = labelled.data / "tiny-r1"
    table = pd.read_csv(new / "split.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "class", "split", "source", "origin"]
    added = table[table["source"] != "original"]
    assert sorted(zip(added["origin"], added["class"], added["source"])) == sorted([
        (str(labelled.images[0]), "gamma", "labelled"), (str(labelled.images[2]), "beta", "labelled"),
        (str(labelled.images[3]), "alpha", "pseudo")])  # the person's label of images[0] wins over its pseudo row
    assert (added["split"] == "train").all()
    for row in added.itertuples():
        assert (new / "train" / row.path).read_bytes() == open(row.origin, "rb").read()
    original = snapshot(labelled.data / "tiny")
    assert original == before  # NAME never modified
    copy = snapshot(new)
    for split in ("valid", "test"):
        assert {k: v for k, v in copy.items() if k.startswith(split)} == \
               {k: v for k, v in original.items() if k.startswith(split)}
    train_files = {k for k in copy if k.startswith("train/")}
    assert train_files - {k for k in original if k.startswith("train/")} == {f"train/{p}" for p in added["path"]}
    assert len(table[table["source"] == "original"]) == sum(1 for k in original if k.endswith(".png"))
    assert "1 pseudo-labelled row was also labelled by hand" in out
    assert not says_one_of_a_plural(out)
    assert not [p for p in labelled.data.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("problem", ["bad label", "two labels", "missing file", "existing NEW"])
def test_ingest_refuses_without_writing_anything(labelled, run, problem):
    table = pd.read_csv(labelled.queries, keep_default_na=False)
    if problem == "bad label":
        table.loc[2, "label"] = "delta"
        expected = "'delta'"
    elif problem == "two labels":  # both labels are classes: the mistake is the second label, not the class
        table.loc[3] = {**table.loc[0], "rank": 4, "label": "alpha"}
        expected = "1 file given two different labels (line 5: img000.png labelled both 'gamma' and 'alpha')"
    elif problem == "missing file":
        table.loc[2, "path"] = str(labelled.images[2].with_name("gone.png"))
        expected = "gone.png does not exist"
    else:
        (labelled.data / "tiny-r1").mkdir()
        expected = "--overwrite"
    table.to_csv(labelled.queries, index=False)
    before = snapshot(labelled.data)
    listing = sorted(p.name for p in labelled.data.iterdir())
    code, out, err = run("6_active", *ingest_args(labelled))
    assert code == 2
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert problem == "bad label" or "classes" not in err
    assert snapshot(labelled.data) == before and sorted(p.name for p in labelled.data.iterdir()) == listing


# ---------------------------------------------------------------- the simulation

def test_two_round_simulation_writes_the_curve(tiny, run, monkeypatch):
    decoded = []
    monkeypatch.setattr(data, "decode_image", lambda path, *size: decoded.append(path) or decode_image(path, *size))
    kept = []  # a round is never resumed: no last.pth, no curves.svg (training.Records)
    monkeypatch.setattr(training, "save_last", lambda *args: kept.append("last.pth"))
    monkeypatch.setattr(training.plots, "training_curves", lambda *args, **kw: kept.append("curves.svg"))
    code, out, err = run("6_active", "--simulate", *tiny.data_args, "--initial", 0.3, "--budget", 3, "--rounds", 2,
                         "--acquisition", "entropy-balanced", "random", "--seeds", 0, "--pseudo",
                         "--pseudo-threshold", 0.34, *TRAIN_ARGS, "--device", "cpu", "--precision", "fp32")
    assert code == 0, err
    folder = next((tiny.logs / "active" / "tiny").iterdir())
    curve = pd.read_csv(folder / "curve.csv")
    assert list(curve.columns) == simulation.CURVE_COLUMNS == [
        "strategy", "seed", "round", "labelled", "test_acc", "test_bacc", "tail_share", "pseudo_labels",
        "pseudo_precision"]
    # the tiny split: 12 + 7 + 4 training images; 0.3 of each class -> 4 + 2 + 1 = 7 labelled at the start
    assert list(zip(curve["strategy"], curve["round"], curve["labelled"])) == [
        ("entropy-balanced", 0, 7), ("entropy-balanced", 1, 10), ("entropy-balanced", 2, 13),
        ("random", 0, 7), ("random", 1, 10), ("random", 2, 13)]
    assert (curve["seed"] == 0).all()
    start = curve[curve["round"] == 0]
    assert start["test_bacc"].nunique() == 1 and (start["pseudo_labels"] == 0).all()  # one shared start
    assert start["tail_share"].tolist() == pytest.approx([100 / 7] * 2, abs=1e-3)  # the tail: gamma, 1 of the 7
    assert curve["test_acc"].between(0, 100).all() and curve["tail_share"].between(0, 100).all()
    later = curve[curve["round"] > 0]
    assert (later["pseudo_labels"] <= 23 - later["labelled"]).all()
    assert later[later["pseudo_labels"] > 0]["pseudo_precision"].between(0, 100).all()
    queries = pd.read_csv(folder / "queries.csv")
    assert len(queries) == 12 and not queries.duplicated(["strategy", "seed", "path"]).any()
    assert (folder / "curve.svg").read_text().startswith("<?xml")
    assert set(pd.read_csv(folder / "summary.csv")["strategy"]) == {"entropy-balanced", "random"}
    assert "entropy-balanced" in out and "vs random" in out
    assert "2 rounds of 3 queries, strategies entropy-balanced, random, seed 0;" in out
    assert not says_one_of_a_plural(out)
    assert not (folder / ".rounds").exists()
    assert kept == []
    # every image decoded once for the whole simulation: its five trainings hold index subsets of them
    assert len(decoded) == len(set(decoded)) == sum(1 for p in (tiny.data / "tiny").rglob("*.png"))
    assert not list((tiny.data / "tiny" / ".cache").glob("stats-*"))  # a subset's statistics are not the split's


def test_a_subset_holds_the_images_at_its_indices_with_the_labels_given(tiny):
    split = data.scan_split(tiny.data / "tiny", "train")
    images = data.load_images(split, 8, 8, "cpu", progress=False)
    part = data.subset(images, [5, 0, 20], [2, 2, 0])
    assert part.split.paths == [split.paths[5], split.paths[0], split.paths[20]]
    assert part.labels.tolist() == [2, 2, 0] and part.split.class_counts() == [1, 0, 2]
    assert torch.equal(part.images, images.images[[5, 0, 20]])
    mean, std = data.training_stats(part, 8, 8)
    assert mean == pytest.approx((part.images.double() / 255).mean(dim=(0, 2, 3)).tolist())
    assert data.subset(images, [3]).labels.tolist() == [split.labels[3].item()]


def test_simulation_refuses_a_bad_strategy_and_the_query_only_flags(tiny, run):
    code, _, err = run("6_active", "--simulate", *tiny.data_args, "--initial", 0.3, "--budget", 3, "--rounds", 1,
                       "--acquisition", "entropy-sorted", *TRAIN_ARGS)
    assert code == 2 and "unknown strategy 'entropy-sorted'" in err
    code, _, err = run("6_active", "--simulate", *tiny.data_args, "--initial", 0.3, "--budget", 3, "--rounds", 1,
                       "--balance", *TRAIN_ARGS)
    assert code == 2 and "entropy-balanced" in err
    code, _, err = run("6_active", "--simulate", *tiny.data_args, "--initial", 0.3, "--budget", 3, "--rounds", 1,
                       "--seed", 1, *TRAIN_ARGS)
    assert code == 2 and "--seeds" in err
    assert not (tiny.logs / "active").exists()


@pytest.mark.parametrize("mistake, expected", [
    (["--objective", "FOO"], "unknown --objective 'FOO'"),
    (["--objective", "CCE", "--drw", "1"], "--drw works only with"),
    (["--objective", "SPBL", "--mixup", "0.2"], "--mixup cannot train --objective SPBL"),
    (["--model_index", "0", "--height", "16", "--width", "16"], "needs images of at least"),
])
def test_simulation_checks_the_whole_plan_before_writing_anything(tiny, run, mistake, expected):
    code, out, err = run("6_active", "--simulate", *tiny.data_args, "--initial", 0.3, "--budget", 3, "--rounds", 1,
                         *TRAIN_ARGS, *mistake)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert "simulation folder" not in out and not (tiny.logs / "active").exists()


def test_area_under_the_curve_and_the_paired_difference():
    assert simulation.area_under_curve([10, 20, 40], [50, 60, 60]) == pytest.approx((550 + 1200) / 30)
    curve = pd.DataFrame({"strategy": ["a"] * 4 + ["random"] * 4, "seed": [0, 0, 1, 1] * 2,
                          "labelled": [10, 20] * 4, "test_bacc": [50, 70, 52, 72, 50, 60, 50, 62]})
    summary = simulation.summarise(curve, ["a", "random"]).set_index("strategy")
    assert summary.loc["a", "auc"] == pytest.approx(61)
    assert summary.loc["a", "vs_random"] == pytest.approx(5.5)  # (60 - 55) and (62 - 56)
    assert np.isnan(summary.loc["random", "vs_random"])
