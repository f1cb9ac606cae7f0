"""What a new user meets (issue 22): a busy machine, dataset names that are paths, broken images,
test results replaced without a word, options that do nothing, and messages that mislead."""
import json
import shutil
import subprocess
import warnings

import pandas as pd
import pytest
import torch
from conftest import REPO, copy_untested, make_source
from test_bad_input import assert_user_error, no_runs, train_args
from test_recipes import fake_run

from toolkit import cli, engine, plan

# ---------------------------------------------------------------- threads on a busy machine


@pytest.fixture
def busy(monkeypatch):
    """A machine with 2 cores and a load average of 3.5 (other jobs), PyTorch threads restored after."""
    monkeypatch.setattr(engine.os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    monkeypatch.setattr(engine, "others_running_now", lambda: 3)
    monkeypatch.setattr(engine, "usable_cores", lambda: 2)
    yield
    torch.set_num_threads(1)


def test_a_busy_machine_is_named_with_the_advice_of_fewer_threads(busy):
    with pytest.warns(UserWarning, match=r"busy \(load average 3.5 on 2 cores, about 0 idle\).*--threads 1"):
        engine.use_threads(2)
    assert torch.get_num_threads() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.use_threads(1)  # one thread: nothing to advise
    assert torch.get_num_threads() == 1


def test_an_idle_machine_gets_no_warning(monkeypatch, busy):
    monkeypatch.setattr(engine.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.use_threads(2)


def test_the_load_of_a_step_just_ended_is_not_called_busy(monkeypatch, busy):
    """The 1-minute average still counts a training that ended seconds ago (3_run.sh's next step):
    with nothing else running now, no warning."""
    monkeypatch.setattr(engine, "others_running_now", lambda: 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.use_threads(2)


def test_others_running_now_reads_procs_running_count_less_the_reader():
    import os
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg here")
    assert 0 <= engine.others_running_now(samples=2, apart_s=0) < 10_000


@pytest.mark.parametrize("name", ["1_train", "2_test", "5_predict", "6_active"])
def test_every_computing_script_takes_threads(name, capsys):
    import importlib
    with pytest.raises(SystemExit):
        importlib.import_module(name).main(["--help"])
    assert "--threads N" in capsys.readouterr().out


def test_train_threads_sets_pytorchs_threads_and_warns(tiny, run, busy):
    with pytest.warns(UserWarning, match="the machine is busy") as warned:
        code, out, err = run("1_train", *train_args(tiny), "--threads", "2", "--dry-run")
    assert code == 0, err
    assert torch.get_num_threads() == 2 and len(warned) == 1


def test_threads_is_neither_part_of_a_recipe_nor_fixed_on_resume():
    from toolkit import recipes
    assert "threads" in recipes.NEUTRAL and "threads" in plan.RESUMABLE


# ---------------------------------------------------------------- dataset names


@pytest.mark.parametrize("name", ["../src", ".", "..", "a_datasets/digits-lt", "/abs/path"])
def test_a_dataset_name_that_is_a_path_is_refused_in_the_split(roots, run, name):
    make_source(roots.source, "src")
    code, _, err = run("0_data_split", f"--dataset={name}", "--source-root", roots.source / "src",
                       "--data-root", roots.data)
    assert_user_error((code, "", err), "a dataset is a folder name, not a path")
    assert sorted(p.name for p in (roots.source / "src").iterdir()) == ["alpha", "beta", "gamma"]
    assert not list(roots.data.iterdir())


@pytest.mark.parametrize("script", ["1_train", "2_test"])
def test_a_dataset_path_is_refused_without_advising_to_split_the_path(tiny, run, script):
    args = ["--model_index", "41", "--dataset=a_datasets/digits-lt", "--data-root", tiny.data,
            "--logs-root", tiny.logs]
    code, out, err = run(script, *args)
    assert_user_error((code, out, err), "a dataset is a folder name", "(e.g. digits-lt)")
    assert "0_data_split.py --dataset=a_datasets" not in err


def test_a_new_dataset_version_name_is_a_name_too(tiny, run, tmp_path):
    code, out, err = run("6_active", "--ingest", tmp_path / "queries.csv", "--dataset", "tiny", "--into", "../out",
                         "--data-root", tiny.data)
    assert_user_error((code, out, err), "--into", "a dataset is a folder name")


# ---------------------------------------------------------------- unreadable images in the split


def test_the_split_decodes_every_image_and_leaves_out_the_unreadable_ones(roots, run):
    source = make_source(roots.source)
    broken = source / "alpha" / "img003.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: its header reads, its pixels do not
    code, out, err = run("0_data_split", "--dataset", "tiny", "--source-root", roots.source,
                         "--data-root", roots.data)
    assert code == 0, err
    assert f"left out: {broken} does not decode" in out
    split = pd.read_csv(roots.data / "tiny" / "split.csv")
    assert "alpha/img003.png" not in set(split["path"]) and len(split) == 16 + 9 + 6 - 1
    assert not [s for s in ("train", "valid", "test") if (roots.data / "tiny" / s / "alpha" / "img003.png").exists()]


# ---------------------------------------------------------------- 2_test.py keeps the run's own test


@pytest.fixture
def tested_copy(trained_run, tmp_path, run):
    copy_untested(trained_run.logs, tmp_path / "logs")
    run_dir = next((tmp_path / "logs" / "ResNet20" / "tiny" / "ERM").iterdir())
    code, _, err = run("2_test", "--run", run_dir, "--precision", "fp32", "--no-progress", "--bootstrap", "50",
                       "--data-root", trained_run.data)
    assert code == 0, err
    return run_dir


def test_2_test_takes_a_run_directory(trained_run, tested_copy):
    settings = json.loads((tested_copy / "bootstrap-50" / "test_settings.json").read_text())
    assert settings["bootstrap"] == 50 and settings["split"] == "test" and settings["images"] == 4
    assert not (tested_copy / "test_metrics.csv").exists()  # a test set otherwise is not the run's own


def test_a_differently_set_test_never_replaces_the_runs_own(trained_run, tested_copy, run):
    args = ["--run", tested_copy, "--precision", "fp32", "--no-progress", "--data-root", trained_run.data]
    assert run("2_test", *args)[0] == 0
    own = {p.name: p.read_bytes() for p in tested_copy.iterdir() if p.is_file() and p.suffix in (".csv", ".svg")}
    code, out, err = run("2_test", *args, "--shot-thresholds", "5", "1")
    assert code == 0, err
    assert (tested_copy / "shots-5-1" / "test_metrics.csv").exists() and "is kept" in out
    assert {name: (tested_copy / name).read_bytes() for name in own} == own


def test_run_and_the_run_naming_options_exclude_each_other(tested_copy, run):
    assert_user_error(run("2_test", "--run", tested_copy, "--model_index", "41"), "--run names the run itself")
    assert_user_error(run("2_test", "--bootstrap", "0"), "name the run: --run RUN_DIR")


# ---------------------------------------------------------------- options that do nothing


BASE = ["--model_index", "42", "--dataset", "d"]


@pytest.mark.parametrize("extra, fragment", [
    (["--freeze-backbone"], "add --pretrained PATH"),
    (["--sampler", "class", "--drs", "2"], "--drs samples by instance until its epoch"),
    (["--drs", "5", "--epochs", "2"], "--drs 5 starts after the last epoch (2)"),
    (["--drw", "3", "--epochs", "2"], "--drw 3 starts after the last epoch (2)"),
    (["--ccegamma", "5", "--objective", "ERM"], "--ccegamma is read by --objective CCE, not by ERM"),
    (["--flgamma", "1", "--objective", "LDAM"], "--flgamma is read by --objective FL, not by LDAM"),
    (["--objective", "FOO"], "unknown --objective 'FOO'"),
])
def test_options_that_would_do_nothing_are_refused(extra, fragment):
    with pytest.raises(cli.UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        plan.parse_args(BASE + extra)


def test_an_objective_flag_shared_by_declaration_is_accepted():
    assert plan.parse_args(BASE + ["--objective", "FL", "--cb-beta", "0.99"]).cb_beta == 0.99  # FL reads cb_beta


def test_drw_at_the_last_epoch_is_said_in_one_warning():
    with pytest.warns(UserWarning, match="--drw 2 starts at the last epoch: only epoch 2 is re-weighted"):
        plan.parse_args(BASE + ["--drw", "2", "--epochs", "2"])


def test_freeze_backbone_without_pretrained_leaves_no_run(tiny, run):
    assert_user_error(run("1_train", *train_args(tiny), "--freeze-backbone"), "--pretrained")
    assert no_runs(tiny.logs)


def test_cache_gb_0_streams_from_disk(tiny, run):
    code, out, err = run("1_train", *train_args(tiny), "--cache-gb", "0", "--dry-run")
    assert code == 0, err
    assert "train: --cache-gb 0; streaming from disk" in out


# ---------------------------------------------------------------- messages


def three_way_recipes(logs):
    """Three ERM recipes, each departing from the other two in one setting: no recipe is the usual one."""
    fake_run(logs, seed=0, lr=0.05)
    fake_run(logs, seed=0, momentum=0.5)
    fake_run(logs, seed=0, batchsize=64)


def test_a_recipe_label_shows_only_what_sets_it_apart(tmp_path):
    from test_recipes import grouped
    fake_run(tmp_path, seed=0)
    fake_run(tmp_path, seed=1)
    fake_run(tmp_path, seed=0, lr=0.05)
    fake_run(tmp_path, seed=0, momentum=0.5)
    assert [r.label for r in grouped(tmp_path)] == ["ERM", "ERM (lr=0.05)", "ERM (momentum=0.5)"]


def test_the_baseline_error_is_short_and_points_to_recipes_csv(tmp_path, run):
    three_way_recipes(tmp_path)
    for name in ("ERM", "XYZ"):
        code, out, err = run("4_report", tmp_path, "--baseline", name)
        assert_user_error((code, out, err), "recipes.csv")
        assert len(err) < 250, err
    labels = set(pd.read_csv(tmp_path / "recipes.csv")["recipe"])
    assert labels == {"ERM (lr=0.05)", "ERM (momentum=0.5)", "ERM (batchsize=64)"}
    assert run("4_report", tmp_path, "--baseline", "ERM (batchsize=64)")[0] == 0


def test_a_diverged_first_epoch_says_nothing_was_kept_and_no_advice_already_followed(tiny, run):
    code, out, err = run("1_train", *train_args(tiny, lr="1e30"), "--precision", "fp32", "--warmup")
    assert_user_error((code, out, err), "non-finite", "no epoch finished", "was removed", "try a lower --lr")
    assert "kept" not in err and "--precision fp32" not in err and "--warmup" not in err
    assert "(kept once its first epoch finishes)" in out  # the directory it names is not promised
    assert no_runs(tiny.logs)


def test_predict_names_a_missing_run_first(run, tmp_path):
    for images in ([], [tmp_path / "missing.png"]):
        assert_user_error(run("5_predict", "--run", "no/such/run", *images), "no/such/run is not a run directory")


def test_predict_a_missing_image_is_one_line(trained_run, run, tmp_path):
    code, out, err = run("5_predict", "--run", trained_run.run_dir, tmp_path / "missing.png", "--no-progress")
    assert_user_error((code, out, err), "missing.png: no such file or folder")


def test_predict_one_image_says_image(trained_run, run, tmp_path):
    image = next((trained_run.data / "tiny" / "test" / "alpha").iterdir())
    code, out, err = run("5_predict", "--run", trained_run.run_dir, image, "--output", tmp_path / "p.csv",
                         "--no-progress")
    assert code == 0, err
    assert ": 1 image, device" in out and "1 prediction\n" in out


def test_run_sh_help_prints_the_plans():
    result = subprocess.run(["bash", str(REPO / "3_run.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "objectives" in result.stdout and "compare" in result.stdout and "error" not in result.stdout


def test_compile_says_it_is_compiling_without_progress_bars(tiny, run, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **options: module)  # the message, not the minute
    code, out, err = run("1_train", *train_args(tiny), "--compile", "--epochs", "1")
    assert code == 0, err
    assert "--compile: torch.compile compiles the model" in out


# ---------------------------------------------------------------- small things


def test_predictions_csv_at_the_root_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", "predictions.csv"], cwd=REPO, timeout=30)
    assert result.returncode == 0


def test_the_readme_names_the_per_dataset_recall_figures():
    assert "per_class_recall_<dataset>.svg" in (REPO / "README.md").read_text()


def test_counted():
    assert [cli.counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]

