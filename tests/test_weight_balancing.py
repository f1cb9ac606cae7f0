"""--max-norm (weight balancing's MaxNorm): the projection by hand, its threshold, both stages."""
import pytest
import torch
from conftest import TRAIN_ARGS

from toolkit import plan, runs
from toolkit.weight_balancing import MaxNorm


def linear_model(rows, bias):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(len(rows[0]), len(rows)))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(rows))
        model[1].bias.copy_(torch.tensor(bias))
    return model


def test_projection_by_hand():
    """Row norms 3, 5, 1: THRESH 0.5 gives t = 1 + 0.5 (5 - 1) = 3 (setPerLayerThresh,
    regularizers.py:27); only the row of norm 5 is above it and is scaled by 3/5 (PGD, :43-50);
    the bias is not touched (threshold inf for a 1-d parameter, :22-24)."""
    model = linear_model([[3.0, 0.0], [3.0, 4.0], [1.0, 0.0]], [7.0, -8.0, 9.0])
    constraint = MaxNorm(model, 0.5)
    assert constraint.threshold.item() == pytest.approx(3.0)
    constraint.project()
    assert model[1].weight.flatten().tolist() == pytest.approx([3.0, 0.0, 1.8, 2.4, 1.0, 0.0])
    assert model[1].bias.tolist() == [7.0, -8.0, 9.0]


def test_the_threshold_is_set_once_at_the_start():
    model = linear_model([[3.0, 0.0], [3.0, 4.0], [1.0, 0.0]], [0.0, 0.0, 0.0])
    constraint = MaxNorm(model, 0.0)  # t = the smallest norm, 1
    with torch.no_grad():
        model[1].weight.mul_(10)  # every row grows; the threshold does not follow
    constraint.project()
    assert constraint.norms().tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_thresh_one_or_more_leaves_the_start_untouched():
    rows = [[3.0, 0.0], [3.0, 4.0], [1.0, 0.0]]
    model = linear_model(rows, [0.0, 0.0, 0.0])
    MaxNorm(model, 1.0).project()
    assert model[1].weight.tolist() == rows


def test_flag_and_folder():
    args = plan.parse_args(["--model_index", "41", "--dataset", "d", "--objective", "CB", "--max-norm", "0.1"])
    assert (args.max_norm, plan.recipe_name(args)) == (0.1, "CB-MaxNorm")


@pytest.mark.parametrize("argv, message", [
    (["--max-norm", "-1"], "--max-norm"),
    (["--max-norm", "abc"], "--max-norm"),
])
def test_bad_thresh_is_one_error_line(run, argv, message):
    code, _, err = run("1_train", "--model_index", "41", "--dataset", "d", *argv)
    assert code == 2 and err.count("error:") == 1 and message in err and "Traceback" not in err


def test_ldams_cosine_classifier_is_refused_with_the_reason(tiny, run):
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--objective", "LDAM", "--max-norm", "0.1")
    assert code == 2 and err.count("error:") == 1
    assert "cosine classifier" in err and "Traceback" not in err
    assert not (tiny.logs / "ResNet20" / "tiny" / "LDAM-MaxNorm").exists()


def classifier_norms(state: dict) -> torch.Tensor:
    return torch.linalg.vector_norm(state["fc.weight"], dim=1)


def test_two_stages_end_to_end(tiny, run):
    """Stage 1: ERM with weight decay; stage 2: CB on the frozen stage-1 backbone with MaxNorm 0.1
    (their demo2's recipe). Stage 2's rows stay within the threshold of stage 1's norms, which
    last.pth records, and the backbone is stage 1's to the bit."""
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args, "--weight-decay", "5e-3")[0] == 0
    stage1 = next((tiny.logs / "ResNet20" / "tiny" / "ERM").iterdir())
    best = runs.require_best_checkpoint(stage1)
    code, out, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--pretrained", best, "--freeze-backbone",
                         "--objective", "CB", "--max-norm", "0.1", "--weight-decay", "0.1", "--lr", "0.5")
    assert code == 0, err
    stage2 = next((tiny.logs / "ResNet20" / "tiny" / "CB-MaxNorm").iterdir())
    before = torch.load(best, weights_only=True)["model"]
    last = torch.load(stage2 / "last.pth", weights_only=True)
    norms = classifier_norms(before)
    threshold = norms.min() + 0.1 * (norms.max() - norms.min())
    assert last["max_norm"]["threshold"].item() == pytest.approx(threshold.item(), rel=1e-6)
    assert (classifier_norms(last["model"]) <= threshold * (1 + 1e-5)).all()
    for name, tensor in before.items():
        if not name.startswith("fc.") and not name.endswith("num_batches_tracked"):
            assert torch.equal(tensor, last["model"][name]), name
