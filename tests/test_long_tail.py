"""0_data_split.py --long-tail: the CIFAR-LT profile (int() as in kaidic/LDAM-DRW), balanced valid/test."""
import pandas as pd
import pytest
from conftest import make_source

from toolkit import long_tail

THREE = {"a": (200, 0, 0), "b": (0, 200, 0), "c": (0, 0, 200)}


def test_profile_is_ldam_drw_s_int_rounded_exponential():
    # the published CIFAR-10-LT training counts at imbalance 100 (n_max 5000)
    assert long_tail.profile(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    # the training-set sizes the long-tail papers print: CIFAR-10-LT and CIFAR-100-LT at 100, 50, 10
    assert [sum(long_tail.profile(10, 5000, r)) for r in (100, 50, 10)] == [12406, 13996, 20431]
    assert [sum(long_tail.profile(100, 500, r)) for r in (100, 50, 10)] == [10847, 12608, 19573]
    # int() rounds down where round() would not: 7 * 2^-1 = 3.5 -> 3; 100 * 4^-0.5 = 50, 100 / 4 = 25
    assert long_tail.profile(2, 7, 2) == [7, 3]
    assert long_tail.profile(3, 100, 4) == [100, 50, 25]
    assert long_tail.profile(4, 9, 1) == [9, 9, 9, 9]


def test_largest_n_max_fits_every_pool():
    assert long_tail.largest_n_max([10, 10, 10], 4) == 10          # [10, 5, 2]
    assert long_tail.largest_n_max([10, 3, 10], 4) == 7            # int(n / 2) <= 3 -> n <= 7: [7, 3, 1]
    assert long_tail.largest_n_max([10, 10, 1], 4) == 7            # int(n / 4) <= 1 -> n <= 7


def split_args(roots, *extra):
    return ["--dataset", "tiny", "--source-root", roots.source, "--data-root", roots.data, *extra]


def train_valid_test(target):
    """class -> (train, valid, test) image counts on disk."""
    return {c: tuple(len(list((target / s / c).glob("*.png"))) for s in ("train", "valid", "test"))
            for c in sorted(p.name for p in (target / "train").iterdir())}


def test_long_tail_split_has_the_profile_and_balanced_held_out_splits(roots, run):
    make_source(roots.source, counts={"a": 30, "b": 30, "c": 40}, classes=THREE)
    code, out, err = run("0_data_split", *split_args(roots, "--long-tail", 4, "--ratio", 0.6, 0.2, 0.2))
    assert code == 0, err
    # held out: 0.2 of the smallest class (30) = 6 valid, 6 test in every class; pools 18, 18, 28;
    # n_max = 18: [18, int(18 / 2) = 9, int(18 / 4) = 4]
    assert train_valid_test(roots.data / "tiny") == {"a": (18, 6, 6), "b": (9, 6, 6), "c": (4, 6, 6)}
    profile = pd.read_csv(roots.data / "tiny" / "long_tail.csv")
    assert list(profile.columns) == ["rank", "class", "train", "valid", "test", "imbalance", "n_max"]
    assert profile.values.tolist() == [[0, "a", 18, 6, 6, 4.0, 18], [1, "b", 9, 6, 6, 4.0, 18],
                                       [2, "c", 4, 6, 6, 4.0, 18]]
    assert "int(18 * 4^(-c / 2))" in out and "(folder order)" in out and "33 image(s) left out" in out
    split = pd.read_csv(roots.data / "tiny" / "split.csv")
    assert list(split.columns) == ["path", "class", "split"] and len(split) == 67


def test_class_order_and_n_max(roots, run, tmp_path):
    make_source(roots.source, counts={"a": 30, "b": 30, "c": 30}, classes=THREE)
    order = tmp_path / "order.txt"
    order.write_text("c\n\na\nb\n")
    code, out, err = run("0_data_split", *split_args(roots, "--long-tail", 4, "--n-max", 12, "--class-order", order))
    assert code == 0, err
    # default --ratio 0.7 0.15 0.15 of 30: 4 valid + 4 test (round(4.5) = 4) in every class
    assert train_valid_test(roots.data / "tiny") == {"a": (6, 4, 4), "b": (3, 4, 4), "c": (12, 4, 4)}
    assert f"order of {order}" in out


def test_held_out_images_do_not_depend_on_the_profile_and_the_split_is_seeded(roots, run):
    make_source(roots.source, counts={"a": 20, "b": 20, "c": 20}, classes=THREE)

    def listing(data_root, *extra):
        assert run("0_data_split", "--dataset", "tiny", "--source-root", roots.source, "--data-root", data_root,
                   *extra)[0] == 0
        split = pd.read_csv(data_root / "tiny" / "split.csv")
        return {s: sorted(split[split["split"] == s]["path"]) for s in ("train", "valid", "test")}

    first, again = listing(roots.data / "1", "--long-tail", 4), listing(roots.data / "2", "--long-tail", 4)
    other_profile = listing(roots.data / "3", "--long-tail", 2)
    other_seed = listing(roots.data / "4", "--long-tail", 4, "--seed", 1)
    assert first == again
    assert first["valid"] == other_profile["valid"] and first["test"] == other_profile["test"]
    assert set(first["train"]) < set(other_profile["train"])  # a flatter profile keeps more, the same first
    assert first["valid"] != other_seed["valid"]


def test_a_plain_split_over_a_long_tailed_one_removes_its_profile(roots, run):
    make_source(roots.source, counts={"a": 20, "b": 20, "c": 20}, classes=THREE)
    assert run("0_data_split", *split_args(roots, "--long-tail", 4))[0] == 0
    assert (roots.data / "tiny" / "long_tail.csv").is_file()
    assert run("0_data_split", *split_args(roots, "--overwrite"))[0] == 0
    assert not (roots.data / "tiny" / "long_tail.csv").exists()


@pytest.mark.parametrize("extra, message", [
    (["--long-tail", "0.5"], "must be at least 1"),
    (["--long-tail", "nan"], "must be a finite number"),
    (["--n-max", "5"], "--n-max tunes the profile of --long-tail; add --long-tail R"),
    # 30 images a class, 4 valid and 4 test each: 22 left for training
    (["--long-tail", "4", "--n-max", "23"], "class 'a' (rank 0) needs 23 training images and has 22 beside its "
                                            "held-out ones; use --n-max 22 or less"),
    (["--long-tail", "4", "--n-max", "3"], "no training image (int(3 / 4) = 0); raise --n-max to at least 4"),
    (["--long-tail", "100"], "the classes allow n_max 22 at most, which leaves the last class 'c' no training image"),
    (["--long-tail", "4", "--class-order", "ORDER"], "must list every class once (not a class: d; listed twice: a; "
                                                     "missing: b)"),
    (["--long-tail", "4", "--class-order", "NOWHERE"], "cannot read --class-order"),
])
def test_bad_long_tail_input_is_one_error_line_and_writes_nothing(roots, run, tmp_path, extra, message):
    make_source(roots.source, counts={"a": 30, "b": 30, "c": 30}, classes=THREE)
    (tmp_path / "ORDER").write_text("a\nc\nd\na\n")
    extra = [str(tmp_path / e) if e in ("ORDER", "NOWHERE") else e for e in extra]
    code, _, err = run("0_data_split", *split_args(roots, *extra))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(roots.data.iterdir()) == []
