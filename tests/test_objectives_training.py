"""Every objective trains through the engine: the loss falls, COT steps twice, state is saved."""
import pandas as pd
import pytest
import torch
from conftest import TRAIN_ARGS

import criterion

RECIPES = [[name] for name in criterion.objective_names()] + [["ERM", "--drw", "3"], ["LDAM", "--drw", "3"]]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: "-".join(r))
def test_short_training_lowers_the_training_loss(tiny, run, recipe):
    code, out, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--epochs", "5", "--lr", "0.02",
                         "--objective", *recipe)
    assert code == 0, err
    folder = recipe[0] + ("-DRW" if "--drw" in recipe else "")
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / folder).iterdir())
    loss = pd.read_csv(run_dir / "train.csv")["loss"]
    # re-weighting objectives (SPBL's pace, GHMC, LDAM's margins) make single epochs jumpy on 23
    # images; the claim is that training reaches a much lower loss by its end
    assert loss.iloc[-2:].min() < 0.5 * loss.iloc[0], list(loss)


def test_cot_takes_two_optimizer_steps_per_batch(tiny, run, monkeypatch):
    steps = []
    original = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        steps.append(id(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args, "--epochs", "1", "--objective", "COT")[0] == 0
    batches = -(-23 // 8)  # 23 training images of tiny, batch 8
    assert len(steps) == 2 * batches
    first, second = steps[0::2], steps[1::2]
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]


def test_ldam_trains_a_cosine_classifier(tiny, run):
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args, "--epochs", "1", "--objective", "LDAM")[0] == 0
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "LDAM").iterdir())
    state = torch.load(run_dir / "last.pth", weights_only=True)
    assert state["cosine_scale"] == 30
    assert not [k for k in state["model"] if k.endswith("fc.bias")]  # the cosine layer has no bias
