"""LAS and the MiSLAS two-stage recipe: per-class epsilons by hand and against a transcription of the
reference code, the loss by hand, its limits, and stage 2 (a frozen backbone whose BatchNorm
statistics update, --update-bn-stats) with its seeds grouped as one recipe."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN_ARGS, objective_args

import criterion
from losses.base import MixedTargets
from losses.label_aware import LabelAwareSmoothing, label_aware_epsilons
from toolkit import recipes, runs
from toolkit.cli import UserError


def reference_epsilons(cls_num_list, smooth_head, smooth_tail, shape):
    """dvlab-research/MiSLAS, methods.py:35-45 (LabelAwareSmoothing.__init__), transcribed in numpy."""
    n_1, n_K = max(cls_num_list), min(cls_num_list)
    counts = np.array(cls_num_list)
    if shape == "concave":
        return smooth_tail + (smooth_head - smooth_tail) * np.sin((counts - n_K) * np.pi / (2 * (n_1 - n_K)))
    if shape == "linear":
        return smooth_tail + (smooth_head - smooth_tail) * (counts - n_K) / (n_1 - n_K)
    return smooth_head + (smooth_head - smooth_tail) * np.sin(1.5 * np.pi + (counts - n_K) * np.pi / (2 * (n_1 - n_K)))


def epsilons(counts, head, tail, shape="concave"):
    return label_aware_epsilons(torch.tensor(counts, dtype=torch.float64), head, tail, shape).tolist()


# counts 10, 6, 2: r_c = (n_c - 2) / 8 = 1, 1/2, 0
@pytest.mark.parametrize("shape, expected", [
    ("concave", [0.3, 0.3 * math.sqrt(0.5), 0.0]),           # 0.3 sin(pi/2 r): sin(pi/4) = sqrt(1/2)
    ("linear", [0.3, 0.15, 0.0]),                            # 0.3 r
    ("convex", [0.3, 0.3 - 0.3 * math.sqrt(0.5), 0.0]),      # 0.3 + 0.3 sin(3pi/2 + pi/2 r): sin(7pi/4) = -sqrt(1/2)
])
def test_epsilons_by_hand(shape, expected):
    assert epsilons([10, 6, 2], 0.3, 0.0, shape) == pytest.approx(expected, abs=1e-7)


def test_epsilons_with_a_tail_value_by_hand():
    # head 0.4, tail 0.1: 0.1 + 0.3 sin(pi/2 r); the class order does not matter, only the counts
    assert epsilons([2, 10, 6], 0.4, 0.1) == pytest.approx([0.1, 0.4, 0.1 + 0.3 * math.sqrt(0.5)], abs=1e-7)


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_epsilons_equal_the_reference_code(seed, shape):
    rng = np.random.default_rng(seed)
    counts = [int(n) for n in rng.integers(1, 500, size=int(rng.integers(2, 12)))]
    head, tail = float(rng.uniform(0, 0.5)), float(rng.uniform(0, 0.2))
    assert epsilons(counts, head, tail, shape) == pytest.approx(reference_epsilons(counts, head, tail, shape).tolist(),
                                                                abs=1e-6)


def test_equal_counts_are_plain_label_smoothing():
    # the reference divides 0 by 0 here; every class is the largest, so every eps is the head's
    assert epsilons([5, 5, 5], 0.3, 0.1) == pytest.approx([0.3] * 3)
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(8, 3, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    loss = criterion.build_criterion("LAS", [5, 5, 5], objective_args(las_head=0.3, las_tail=0.1))
    assert loss(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets, label_smoothing=0.3).item(),
                                                         rel=1e-6)


def test_loss_by_hand():
    # p = (1/4, 1/2, 1/4) in every row; -log p = (2, 1, 2) ln 2, their mean 5/3 ln 2
    # linear eps for counts 10, 6, 2: 0.3, 0.15, 0
    # class 0: 0.7 * 2 ln2 + 0.3 * 5/3 ln2 = 1.9 ln2; class 1: 0.85 ln2 + 0.25 ln2 = 1.1 ln2; class 2: 2 ln2
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]] * 3))
    loss = criterion.build_criterion("LAS", [10, 6, 2], objective_args(las_shape="linear"))
    assert loss(logits, torch.tensor([0, 1, 2])).item() == pytest.approx(5 / 3 * math.log(2), rel=1e-6)
    assert loss(logits[:1], torch.tensor([0])).item() == pytest.approx(1.9 * math.log(2), rel=1e-6)


def test_zero_epsilons_are_the_cross_entropy_and_mixup_is_per_sample():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=generator) * 2
    a, b = torch.randint(0, 4, (6,), generator=generator), torch.randint(0, 4, (6,), generator=generator)
    plain = LabelAwareSmoothing(torch.zeros(4))
    assert plain(logits, a).item() == pytest.approx(F.cross_entropy(logits, a).item(), rel=1e-6)
    loss = criterion.build_criterion("LAS", [40, 20, 10, 5], objective_args())
    mixed = loss(logits, MixedTargets(a, b, torch.tensor(0.25)))
    expected = (0.25 * loss.per_sample(logits, a) + 0.75 * loss.per_sample(logits, b)).mean()
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)


def test_defaults_are_mislas_cifar10_imbalance_100():
    # config/cifar10/cifar10_imb001_stage2_mislas.yaml: smooth_head 0.3, smooth_tail 0.0 (concave)
    assert (criterion.DEFAULTS["las_head"], criterion.DEFAULTS["las_tail"], criterion.DEFAULTS["las_shape"]) == (
        0.3, 0.0, "concave")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, message", [
    (["--objective", "LAS", "--las-head", "1.5"], "argument --las-head"),
    (["--objective", "LAS", "--las-tail", "-0.1"], "argument --las-tail"),
    (["--objective", "LAS", "--las-shape", "exp"], "argument --las-shape"),
    (["--update-bn-stats"], "--update-bn-stats updates the BatchNorm statistics of a frozen backbone; add "
                            "--freeze-backbone"),
])
def test_bad_input_is_one_error_line(tiny, run, argv, message):
    code, out, err = run("1_train", *TRAIN_ARGS, *argv, *tiny.data_args)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not tiny.logs.exists()


def test_las_refuses_an_empty_class():
    with pytest.raises(UserError, match="no training images"):
        criterion.build_criterion("LAS", [5, 0, 2], objective_args())


# ---------------------------------------------------------------- the two stages

def stage_two(tiny, run, best_pth, *extra):
    code, out, err = run("1_train", *TRAIN_ARGS, "--epochs", "1", "--objective", "LAS", "--sampler", "class",
                         "--pretrained", best_pth, "--freeze-backbone", *extra, *tiny.data_args)
    assert code == 0, err
    run_dir = sorted((tiny.logs / "ResNet20" / "tiny" / "LAS").iterdir())[-1]
    return torch.load(run_dir / "last.pth", weights_only=True)["model"], run_dir


def changed_tensors(before: dict, after: dict) -> set:
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_stage_two_updates_the_bn_statistics_and_trains_only_the_classifier(tiny, run):
    code, _, err = run("1_train", *TRAIN_ARGS, "--epochs", "1", "--mixup", "1.0", *tiny.data_args)
    assert code == 0, err
    best_pth = runs.best_checkpoint(next((tiny.logs / "ResNet20" / "tiny" / "ERM").iterdir()))
    before = torch.load(best_pth, weights_only=True)["model"]

    frozen, _ = stage_two(tiny, run, best_pth)
    assert changed_tensors(before, frozen) == {"fc.weight", "fc.bias"}

    shifted, run_dir = stage_two(tiny, run, best_pth.parent, "--update-bn-stats")  # a run directory: its best
    changed = changed_tensors(before, shifted)
    statistics = {name for name in before if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert changed == {"fc.weight", "fc.bias"} | statistics  # every BatchNorm layer's statistics, no weight
    assert json.loads((run_dir / "args.json").read_text())["update_bn_stats"] is True


def test_stage_two_runs_of_three_seeds_are_one_recipe(tmp_path):
    """Each seed's stage 2 starts from its own stage-1 run: the runs differ in --pretrained's path,
    yet they are repeats of one recipe, told apart from stage 2 on another first stage."""
    def run_dir(objective, seed, **args):
        folder = tmp_path / "ResNet32" / "digits" / objective / f"2026-01-01-00-00-{seed:02d}{args.pop('tag', '')}"
        folder.mkdir(parents=True)
        record = {"objective": objective, "seed": seed, "model_name": "ResNet32", "dataset": "digits", "lr": 0.05,
                  **args}
        (folder / "args.json").write_text(json.dumps(record))
        return folder

    stage_one = [run_dir("ERM", seed, mixup=1.0) for seed in range(3)]
    plain = run_dir("ERM", 0, mixup=None, tag="-plain")  # not a run stamp: a path of its own
    second = [run_dir("LAS", seed, pretrained=str(first / "best.pth"), tag="x") for seed, first in enumerate(stage_one)]
    other = run_dir("LAS", 0, pretrained=str(plain / "best.pth"), tag="y")
    grouped = recipes.group_runs([*second, other])
    assert [len(recipe.run_dirs) for recipe in grouped] == [3, 1]
    assert grouped[0].settings["pretrained"] == {"run of": "ERM", "dataset": "digits", "lr": 0.05, "mixup": 1.0,
                                                 "objective": "ERM"}
    # the first stage's args.json out of reach (another machine): its path with the run's date-time as *
    assert recipes.started_from("/gone/logs/ResNet32/digits/ERM/2026-01-01-00-00-07/81.25.pth") == \
        "/gone/logs/ResNet32/digits/ERM/*/<best>.pth"
    assert recipes.started_from("/gone/logs/ResNet32/digits/ERM/2026-01-01-00-00-07/last.pth") == \
        "/gone/logs/ResNet32/digits/ERM/*/last.pth"
    gone = "/gone/logs/ResNet32/digits/ERM"
    assert recipes.started_from(f"{gone}/2026-01-01-00-00-07") == f"{gone}/*"
    assert recipes.started_from("/weights/resnet.pth") == "/weights/resnet.pth"
    # --pretrained RUN_DIR (its best checkpoint) is the same recipe as --pretrained RUN_DIR/<best>.pth
    assert recipes.started_from(str(stage_one[1])) == grouped[0].settings["pretrained"]
