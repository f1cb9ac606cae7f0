"""Every user mistake: one line `error: ...`, exit code 2, and no run directory left behind."""
import shutil

import pytest

from conftest import TRAIN_ARGS


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


def test_empty_class_folder(tiny, run):
    for image in (tiny.data / "tiny" / "train" / "beta").iterdir():
        image.unlink()
    assert_user_error(run("1_train", *train_args(tiny)), "train/beta holds no images")
    assert no_runs(tiny.logs)


def test_class_folders_that_differ_between_splits(tiny, run):
    (tiny.data / "tiny" / "valid" / "gamma").rename(tiny.data / "tiny" / "valid" / "delta")
    assert_user_error(run("1_train", *train_args(tiny)), "differ from the training split's",
                      "missing 'gamma'", "extra 'delta'")
    assert no_runs(tiny.logs)


def test_unreadable_image_is_named(tiny, run):
    broken = sorted((tiny.data / "tiny" / "train" / "alpha").iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:60])
    assert_user_error(run("1_train", *train_args(tiny)), "cannot read image", str(broken))
    assert no_runs(tiny.logs)


def test_unknown_objective_lists_the_valid_ones(tiny, run):
    assert_user_error(run("1_train", *train_args(tiny), "--objective", "XYZ"),
                      "unknown --objective 'XYZ'", "ERM, CCE, COT, FL")
    assert no_runs(tiny.logs)


@pytest.mark.parametrize("index", ["44", "-1"])
def test_unknown_model_index_lists_the_valid_ones(tiny, run, index):
    assert_user_error(run("1_train", *train_args(tiny, model_index=index)), "0-43")
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
