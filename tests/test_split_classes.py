"""1_train.py checks every split present, the test split included, before it trains: a broken
test split shows in the first second, not when 2_test.py runs after hours of training."""
import shutil

from test_bad_input import assert_user_error, no_runs, train_args


def test_a_test_split_with_other_class_folders_stops_training_at_once(tiny, run):
    (tiny.data / "tiny" / "test" / "gamma").rename(tiny.data / "tiny" / "test" / "delta")
    assert_user_error(run("1_train", *train_args(tiny), "--dry-run"), "tiny/test differ from the training split's",
                      "missing 'gamma'", "extra 'delta'")
    assert_user_error(run("1_train", *train_args(tiny)), "tiny/test differ from the training split's")
    assert no_runs(tiny.logs)


def test_an_empty_test_class_folder_stops_training_at_once(tiny, run):
    for image in (tiny.data / "tiny" / "test" / "beta").iterdir():
        image.unlink()
    assert_user_error(run("1_train", *train_args(tiny)), "test/beta holds no images")
    assert no_runs(tiny.logs)


def test_a_dataset_without_a_test_split_still_trains(tiny, run):
    shutil.rmtree(tiny.data / "tiny" / "test")
    code, out, err = run("1_train", *train_args(tiny), "--dry-run")
    assert code == 0, err
    assert "dry run" in out
