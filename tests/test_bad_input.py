"""Every user mistake: one line `error: ...`, exit code 2, and no run directory left behind."""
import errno
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TRAIN_ARGS
from PIL import Image

import get_model
from toolkit import cli, data
from toolkit.record import load_checkpoint


def no_runs(logs):
    return not logs.exists() or not [p for p in logs.rglob("args.json")]


def train_args(tiny, **override):
    args = TRAIN_ARGS + [str(a) for a in tiny.data_args]
    for flag, value in override.items():
        args[args.index(f"--{flag}") + 1] = str(value)
    return args


def assert_user_error(result, *fragments):
    code, _, err = result
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_dataset_lists_the_existing_ones(tiny, run):
    assert_user_error(run("1_train", *train_args(tiny, dataset="nope")), "no dataset 'nope'", "datasets there: tiny")
    assert no_runs(tiny.logs)


def test_missing_split(tiny, run):
    shutil.rmtree(tiny.data / "tiny" / "valid")
    assert_user_error(run("1_train", *train_args(tiny)), "has no 'valid' split")
    assert no_runs(tiny.logs)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder(tiny, run, split):
    for image in (tiny.data / "tiny" / split / "beta").iterdir():
        image.unlink()
    assert_user_error(run("1_train", *train_args(tiny)), f"{split}/beta holds no images")
    assert no_runs(tiny.logs)


@pytest.mark.parametrize("split", ["valid", "test"])  # a broken test split shows before hours of training
def test_class_folders_that_differ_between_splits(tiny, run, split):
    (tiny.data / "tiny" / split / "gamma").rename(tiny.data / "tiny" / split / "delta")
    assert_user_error(run("1_train", *train_args(tiny), "--dry-run"), f"tiny/{split} differ from the training split's",
                      "missing 'gamma'", "extra 'delta'")
    assert_user_error(run("1_train", *train_args(tiny)), "differ from the training split's")
    assert no_runs(tiny.logs)


def test_a_dataset_without_a_test_split_still_trains(tiny, run):
    shutil.rmtree(tiny.data / "tiny" / "test")
    code, out, err = run("1_train", *train_args(tiny), "--dry-run")
    assert code == 0, err
    assert "dry run" in out


def test_unreadable_image_is_named(tiny, run):
    broken = sorted((tiny.data / "tiny" / "train" / "alpha").iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:60])
    assert_user_error(run("1_train", *train_args(tiny)), "cannot read image", str(broken))
    assert no_runs(tiny.logs)


def test_unknown_objective_lists_the_valid_ones(tiny, run):
    assert_user_error(run("1_train", *train_args(tiny), "--objective", "XYZ"),
                      "unknown --objective 'XYZ'", "ERM, CCE, COT, FL")
    assert no_runs(tiny.logs)


@pytest.mark.parametrize("index", [str(len(get_model.MODELS)), "-1"])
def test_unknown_model_index_lists_the_valid_ones(tiny, run, index):
    assert_user_error(run("1_train", *train_args(tiny, model_index=index)), f"0-{len(get_model.MODELS) - 1}")
    assert no_runs(tiny.logs)


@pytest.mark.parametrize("flag, value, message", [
    ("epochs", "0", "--epochs"), ("batchsize", "0", "--batchsize"), ("lr", "-0.1", "--lr"),
])
def test_nonsense_numbers(tiny, run, flag, value, message):
    assert_user_error(run("1_train", *train_args(tiny, **{flag: value})), message)
    assert no_runs(tiny.logs)


def test_lrstep_must_increase(tiny, run):
    args = train_args(tiny)
    args[args.index("--lrstep") + 1:args.index("--lrstep") + 2] = ["120", "60"]
    assert_user_error(run("1_train", *args), "milestones must be increasing")


def test_datetime_that_matches_no_run(trained_run, run):
    args = ["--model_index", "41", *trained_run.data_args]
    assert_user_error(run("2_test", *args, "--datetime", "2001-01-01-00-00-00"),
                      "no run 2001-01-01-00-00-00", trained_run.run_dir.name)
    assert_user_error(run("2_test", *args, "--datetime", "yesterday"), "not of the form YYYY-MM-DD-HH-MM-SS")


def test_test_without_any_run(tiny, run):
    assert_user_error(run("2_test", "--model_index", "41", *tiny.data_args), "no runs in")


def test_non_image_files_are_skipped_with_one_warning(tiny, run):
    for name in ("notes.txt", "Thumbs.db"):
        (tiny.data / "tiny" / "train" / "alpha" / name).write_text("not an image")
    (tiny.data / "tiny" / "train" / "beta" / "labels.csv").write_text("a,b\n")
    with pytest.warns(UserWarning) as warned:
        code, out, err = run("1_train", *train_args(tiny))
    assert code == 0, err
    assert [str(w.message)[:36] for w in warned if "never predicts" not in str(w.message)] == [
        "skipped 3 non-image file(s) in " + str(tiny.data)[:5]]  # (the 2-epoch run may leave a class at recall 0)


def test_warnings_print_as_one_line():
    line = cli.one_line_warning(UserWarning("skipped 3 files"), UserWarning, "loader.py", 109)
    assert line == "warning: skipped 3 files\n"


def test_every_image_mode_and_size_is_converted(tiny, run):
    folder = tiny.data / "tiny" / "train" / "alpha"
    pixels = np.random.default_rng(0).integers(0, 255, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(pixels[..., 0], "L").save(folder / "gray.png")
    Image.fromarray(pixels[..., :2], "LA").save(folder / "gray_alpha.png")
    Image.fromarray(pixels, "RGBA").save(folder / "rgba.png")
    Image.fromarray(pixels[..., :3], "RGB").convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "tiny.png")
    Image.new("RGB", (3000, 2000), (200, 10, 10)).save(folder / "large.jpg")
    code, out, err = run("1_train", *train_args(tiny))
    assert code == 0, err
    split = data.scan_split(tiny.data / "tiny", "train")
    images = data.cached_images(split, 16, 16, progress=False)
    sixteen = images[split.paths.index(folder / "sixteen.png")]
    gray = images[split.paths.index(folder / "gray.png")]
    assert torch.equal(sixteen, gray)  # 16-bit scaled to 8 bits, not clipped to white


def test_class_names_with_spaces_and_non_ascii_letters(tiny, run):
    names = {"gamma": "Mélanome bénin", "beta": "défaut 2 ç"}
    for split in ("train", "valid", "test"):
        for old, new in names.items():
            (tiny.data / "tiny" / split / old).rename(tiny.data / "tiny" / split / new)
    assert run("1_train", *train_args(tiny))[0] == 0
    code, out, err = run("2_test", "--model_index", "41", "--no-progress", *tiny.data_args)
    assert code == 0, err
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "ERM").iterdir())
    texts = {t.text for t in ET.parse(run_dir / "confusion_matrix.svg").getroot().iter() if t.text}
    assert set(names.values()) <= texts
    assert set(names.values()) <= set(pd.read_csv(run_dir / "per_class.csv")["class"])


def test_test_on_a_run_without_checkpoint(tiny, run):
    run_dir = tiny.logs / "ResNet20" / "tiny" / "ERM" / "2026-01-01-00-00-00"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps({"model_index": 41}))
    assert_user_error(run("2_test", "--model_index", "41", *tiny.data_args), "has no checkpoint")


def test_a_full_disk_while_writing_logs(tiny, run, monkeypatch):
    """The CSV write of epoch 2 fails: a one-line error, and epoch 1's files stay whole."""
    to_csv, calls = pd.DataFrame.to_csv, []

    def full_disk_on_the_third_write(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 writes train.csv and valid.csv; epoch 2's train.csv fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return to_csv(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk_on_the_third_write)
    assert_user_error(run("1_train", *train_args(tiny)), "No space left on device", "train.csv")
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "ERM").iterdir())
    assert load_checkpoint(run_dir / "last.pth").epoch == 1
    assert len(pd.read_csv(run_dir / "train.csv")) == 1
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]


def test_output_piped_into_head_ends_quietly():
    done = subprocess.run(f"{sys.executable} get_model.py | head -n 1", shell=True, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("index") and done.stderr == ""
