"""The training options are declared once (toolkit/plan.py's OPTIONS, the objectives' flags in
losses/): every option of the parser has its declaration, and the lists other modules read are the
declarations' (their expected values below are the lists as they were kept by hand before)."""
import argparse
from types import SimpleNamespace

import pytest

import criterion
from conftest import script
from toolkit import plan, recipes, simulation
from toolkit.cli import UserError
from toolkit.space import Choice, LogUniform


def undeclared(parser: argparse.ArgumentParser) -> list:
    """The flags of `parser` with neither a row in plan.OPTIONS nor an objective's declaration."""
    declared = {o.dest for o in plan.OPTIONS} | {h.dest for h in criterion.hyper_parameters()}
    return [a.option_strings[0] for a in parser._actions
            if a.dest not in declared and a.dest not in ("help", argparse.SUPPRESS)]


def test_every_option_of_the_parser_is_declared():
    assert undeclared(plan.build_parser()) == []


def test_an_option_added_without_a_declaration_is_found():
    parser = plan.build_parser()
    parser.add_argument("--new-knob", type=float)
    assert undeclared(parser) == [*undeclared(plan.build_parser()), "--new-knob"]


def test_every_row_is_one_option_of_the_parser():
    flags = [o.flag for o in plan.OPTIONS]
    assert len(flags) == len(set(flags))
    parser_flags = {a.option_strings[0] for a in plan.build_parser()._actions}
    assert set(flags) <= parser_flags  # no typo, no row left behind by a removed option
    objective_flags = {h.flag for h in criterion.hyper_parameters()}
    assert set(flags) & objective_flags == {"--drw"}  # the objectives declare theirs; --drw's search refusal


def test_what_a_resume_may_change():
    assert plan.RESUMABLE == {"resume", "epochs", "early_stop", "workers", "device", "precision", "compile",
                              "cache_gb", "threads", "no_progress", "dry_run", "data_root", "logs_root"}


def test_what_does_not_change_a_recipe():
    assert recipes.NEUTRAL == {
        "seed", "device", "device_used", "workers", "threads", "cache_gb", "compile", "precision_used", "versions",
        "deterministic", "resume", "dry_run", "no_progress", "data_root", "logs_root",
        "model_name", "mean", "std", "cosine_scale"}


def test_what_a_simulation_sets_itself():
    assert sorted(simulation.NOT_IN_A_SIMULATION) == sorted(
        ("--seed", "--resume", "--dry-run", "--dataset", "--data-root", "--logs-root"))


@pytest.mark.parametrize("flag", ["--resume", "--dry-run", "--dataset", "--data-root", "--logs-root"])
def test_a_simulation_refuses_the_options_it_sets_itself(flag):
    with pytest.raises(UserError, match=rf"^{flag}: not a training argument of a simulation \(it sets them itself\)$"):
        simulation.training_args(SimpleNamespace(train_argv=["--model_index", "41", flag, "x"]), 0)
    with pytest.raises(UserError, match=r"^--seed: a simulation trains with each of --seeds S \[S ...\]$"):
        simulation.training_args(SimpleNamespace(train_argv=["--seed", "1", flag, "x"]), 0)


def test_the_shared_knobs_a_search_draws_in_order():
    drawn = [(k.flag, k.default, k.search) for k in plan.SEARCHED_KNOBS]
    assert drawn == [("--lr", 0.1, LogUniform(0.01, 0.4)), ("--weight-decay", 5e-4, LogUniform(1e-5, 1e-2)),
                     ("--sampler", "instance", Choice(("instance", "class", "sqrt", "progressive"))),
                     ("--sam", None, Choice((None, 0.05, 0.1)))]
    mixup = plan.MIXUP_ALPHA
    assert (mixup.flag, mixup.dest, mixup.default, mixup.search) == ("--mixup", "mixup", None,
                                                                     Choice((None, 0.1, 0.2, 0.4)))
    assert (plan.DRW_SHARE.dest, plan.drw_epoch(0.8, 200)) == ("drw_share", 161)  # LDAM-DRW's reference


@pytest.mark.parametrize("train_argv, message", [
    (["--objective", "LA"], "--objective is not for 7_search.py: name recipes with --objectives"),
    (["--drw", "5"], "--drw is not for 7_search.py: name a -DRW recipe in --objectives (its epoch is searched)"),
    (["--resume", "x"], "--resume is not for 7_search.py: use --resume SEARCH_DIR"),
    (["--resume", "x", "--drw", "5", "--objective", "LA"], "--objective is not"),  # the first, as before
    (["--resume", "x", "--drw", "5"], "--drw is not"),
])
def test_a_search_refuses_the_options_it_sets_itself(train_argv, message):
    with pytest.raises(UserError) as refused:
        script("7_search").training_argv(train_argv, SimpleNamespace(objectives=["ERM"]))
    assert str(refused.value).startswith(message)


def test_a_search_refuses_the_mixing_options_for_objectives_that_cannot_mix():
    both = SimpleNamespace(objectives=["ERM", "GHMC"])
    for flag in ("--mixup", "--cutmix"):
        with pytest.raises(UserError, match=f"^{flag} cannot train GHMC"):
            script("7_search").training_argv(["--model_index", "41", "--dataset", "d", flag, "0.2"], both)


def test_defaults_hold_no_suppressed_option():
    """The withdrawn options (argparse.SUPPRESS dests) are no setting: a recipe started from a run
    directory was labelled `pretrained={"==SUPPRESS==": ...}` while defaults() carried one."""
    assert argparse.SUPPRESS not in plan.defaults()
