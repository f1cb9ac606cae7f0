"""0_data_split.py: stratified, seeded, complete, and the source stays untouched."""
import hashlib

import pandas as pd
import pytest
from conftest import make_source, write_images
from PIL import Image

from toolkit import demo_data, splitting


def snapshot(folder):
    """Every file's path, bytes and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def split_files(target):
    return {split: sorted(str(p.relative_to(target / split)) for p in (target / split).rglob("*.png"))
            for split in ("train", "valid", "test")}


def test_split_is_stratified_and_complete(roots, run):
    counts = {"big": 40, "mid": 11, "small": 3, "two": 2}
    make_source(roots.source, counts=counts,
                classes={"big": (200, 0, 0), "mid": (0, 200, 0), "small": (0, 0, 200), "two": (9, 9, 9)})
    code, out, err = run("0_data_split", "--dataset", "tiny", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 0, err
    files = split_files(roots.data / "tiny")
    per_class = {s: pd.Series([f.split("/")[0] for f in files[s]]).value_counts().to_dict() for s in files}
    # 0.7 / 0.15 / 0.15: big 40 -> valid 6, test 6, train 28; mid 11 -> 2, 2, 7; small 3 -> 1, 1, 1
    assert per_class["train"] == {"big": 28, "mid": 7, "small": 1}
    assert per_class["valid"] == {"big": 6, "mid": 2, "small": 1}
    assert per_class["test"] == {"big": 6, "mid": 2, "small": 1}
    assert "left out: class 'two' has 2 images" in out
    assert "imbalance ratio" in out and "28.0" in out
    # every source image of the kept classes lands in exactly one split
    placed = sorted(f for s in files for f in files[s])
    assert placed == sorted(f"{c}/img{i:03d}.png" for c, n in counts.items() if c != "two" for i in range(n))


def test_split_csv_matches_the_files(tiny):
    table = pd.read_csv(tiny.data / "tiny" / "split.csv")
    assert list(table.columns) == ["path", "class", "split"]
    files = split_files(tiny.data / "tiny")
    for split in files:
        assert sorted(table[table["split"] == split]["path"]) == files[split]
    assert (table["path"].str.split("/").str[0] == table["class"]).all()


def test_split_is_seeded(roots, run):
    make_source(roots.source)
    listings = []
    for seed, data_root in [(0, roots.data / "a"), (0, roots.data / "b"), (1, roots.data / "c")]:
        assert run("0_data_split", "--dataset", "tiny", "--seed", seed, "--source-root", roots.source,
                   "--data-root", data_root)[0] == 0
        listings.append(split_files(data_root / "tiny"))
    assert listings[0] == listings[1]
    assert listings[0] != listings[2]


def test_split_never_changes_the_source_and_refuses_to_overwrite(roots, run):
    source = make_source(roots.source)
    before = snapshot(source)
    args = ["--dataset", "tiny", "--source-root", roots.source, "--data-root", roots.data]
    assert run("0_data_split", *args)[0] == 0
    code, _, err = run("0_data_split", *args)
    assert code == 2 and "already holds a split; pass --overwrite" in err
    (roots.data / "tiny" / "train" / "alpha" / "img000.png").unlink()
    assert run("0_data_split", *args, "--overwrite", "--link")[0] == 0
    linked = roots.data / "tiny" / "train" / "alpha"
    assert all(p.is_symlink() for p in linked.iterdir())
    assert snapshot(source) == before


def test_ratio_without_test_split(roots, run):
    make_source(roots.source)
    code, _, err = run("0_data_split", "--dataset", "tiny", "--ratio", "0.8", "0.2", "0",
                       "--source-root", roots.source, "--data-root", roots.data)
    assert code == 0, err
    assert not (roots.data / "tiny" / "test").exists()
    total = sum(len(list((roots.data / "tiny" / s).rglob("*.png"))) for s in ("train", "valid"))
    assert total == 31


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "no folder"),
    (["--dataset", "tiny", "--ratio", "0.5", "0.2", "0.2"], "must sum to 1"),
    (["--dataset", "tiny", "--ratio", "0.9", "0", "0.1"], "valid must be > 0"),
    ([], "give either --dataset"),
])
def test_split_bad_arguments(roots, run, argv, message):
    make_source(roots.source)
    code, _, err = run("0_data_split", *argv, "--source-root", roots.source, "--data-root", roots.data)
    assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1


def test_images_without_class_folders_are_refused(roots, run):
    write_images(roots.source / "flat", 4, (1, 2, 3), seed=0)
    code, _, err = run("0_data_split", "--dataset", "flat", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 2 and "has no class folders (it holds 4 loose images)" in err


def test_split_counts_give_every_split_an_image():
    assert splitting.split_counts(3, (0.7, 0.15, 0.15)) == [1, 1, 1]
    assert splitting.split_counts(100, (0.7, 0.15, 0.15)) == [70, 15, 15]
    assert splitting.split_counts(5, (0.8, 0.2, 0.0)) == [4, 1, 0]


def test_demo_is_long_tailed_digits(roots, run):
    code, out, err = run("0_data_split", "--demo", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 0, err
    source = roots.source / "digits-lt"
    counts = [len(list((source / str(d)).glob("*.png"))) for d in range(10)]
    assert counts == demo_data.long_tail_counts() == [170, 132, 102, 79, 61, 47, 37, 28, 22, 17]
    assert counts[0] / counts[-1] == 10
    image = Image.open(next((source / "9").glob("*.png")))
    assert image.mode == "RGB" and image.size == (32, 32)
    assert (roots.data / "digits-lt" / "test" / "9").is_dir()
    # the class-folder split is the one it always was: split.csv as the toolkit wrote it before --labels existed
    assert hashlib.sha1((roots.data / "digits-lt" / "split.csv").read_bytes()).hexdigest() == \
        "4c6087ad15d1216ee1aa7211f5b21f376363ff39"
    # a second --demo reuses the rendered images and needs --overwrite for the split
    assert run("0_data_split", "--demo", "--source-root", roots.source, "--data-root", roots.data)[0] == 2


def test_demo_with_long_tail_cuts_every_digit_to_the_protocol(roots, run):
    code, out, err = run("0_data_split", "--demo", "--long-tail", "100", "--source-root", roots.source,
                         "--data-root", roots.data)
    assert code == 0, err
    # the source is every scan of load_digits, balanced (174-183 a digit), the long-tailed demo untouched
    source = [len(list((roots.source / "digits" / str(d)).glob("*.png"))) for d in range(10)]
    assert source == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180] and sum(source) == 1797
    assert not (roots.source / "digits-lt").exists()
    # held out: 15% of the smallest digit (174) in every class; training: int(126 * 100^(-c / 9))
    table = pd.read_csv(roots.data / "digits-lt100" / "long_tail.csv")
    assert table["train"].tolist() == [126, 75, 45, 27, 16, 9, 5, 3, 2, 1]
    assert set(table["valid"]) == set(table["test"]) == {26}
    for split, expected in (("train", table["train"].tolist()), ("test", [26] * 10)):
        counts = [len(list((roots.data / "digits-lt100" / split / str(d)).iterdir())) for d in range(10)]
        assert counts == expected
    assert "digits-lt100" in out
