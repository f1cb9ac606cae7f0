"""The run record: one schema for args.json and every checkpoint; old checkpoints still load."""

import pytest
import torch

from toolkit import runs
from toolkit.cli import UserError
from toolkit.predictor import Predictor, build_trained_model
from toolkit.record import FORMAT_VERSION, Checkpoint, RunRecord, load_checkpoint

VERSION_1_KEYS = ["model_index", "model_name", "dataset", "objective", "class_names", "class_counts",
                  "height", "width", "mean", "std", "cosine_scale", "monitor"]


def test_args_json_best_and_last_checkpoints_hold_the_same_record(trained_run):
    from_args = runs.read_record(trained_run.run_dir)
    best = load_checkpoint(runs.best_checkpoint(trained_run.run_dir))
    last = load_checkpoint(trained_run.run_dir / "last.pth")
    assert from_args == best.record == last.record
    assert from_args.format_version == FORMAT_VERSION
    assert from_args.class_names == ["alpha", "beta", "gamma"] and from_args.model_name == "ResNet20"
    assert best.value is not None and last.value is None
    assert {"optimizers", "criterion", "rng", "best", "batch"} <= set(last.resume)
    assert best.resume == {}


def test_a_checkpoint_written_before_the_format_version_still_loads(trained_run, tmp_path):
    state = torch.load(runs.best_checkpoint(trained_run.run_dir), weights_only=True)
    old = {key: state[key] for key in VERSION_1_KEYS + ["epoch", "value", "model"]}  # the version-1 layout
    assert "format_version" not in old
    torch.save(old, tmp_path / "old.pth")
    loaded = load_checkpoint(tmp_path / "old.pth")
    assert loaded.record.format_version == 1
    assert loaded.record.class_names == state["class_names"] and loaded.epoch == state["epoch"]
    model = build_trained_model(loaded, "old.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items())
    predictor = Predictor(tmp_path / "old.pth", device="cpu", precision="fp32")
    assert predictor.logits(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape == (2, 3)


def test_round_trip_through_the_flat_state():
    record = RunRecord(41, ["a", "b"], 16, 16, [0.5] * 3, [0.2] * 3, class_counts=[3, 1])
    checkpoint = Checkpoint(record, {"w": torch.ones(2)}, epoch=3, resume={"batch": 2})
    back = Checkpoint.from_state(checkpoint.to_state(), "memory")
    assert back.record == record and back.epoch == 3 and back.resume == {"batch": 2}
    assert torch.equal(back.model["w"], torch.ones(2))


@pytest.mark.parametrize("missing", ["model_index", "class_names", "mean"])
def test_a_record_without_a_required_field_names_it(missing):
    values = {"model_index": 41, "class_names": ["a"], "height": 8, "width": 8, "mean": [0] * 3, "std": [1] * 3}
    del values[missing]
    with pytest.raises(UserError, match=f"args.json lacks {missing}; it was not written by 1_train.py"):
        RunRecord.from_dict(values, "args.json")


def test_a_file_without_model_weights_is_refused(tmp_path):
    torch.save({"something": torch.ones(1)}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="holds no model weights"):
        load_checkpoint(tmp_path / "x.pth")
