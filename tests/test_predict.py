"""Models in use: pretrained start (get_model.load_pretrained, --freeze-backbone), 5_predict.py's
predictions on new images, and the ONNX export with its parity check."""
import json
import re
import shutil

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
import torch
import torchvision
from conftest import TRAIN_ARGS
from onnx import numpy_helper
from PIL import Image

import get_model
import models
from toolkit import export, runs
from toolkit.cli import UserError
from toolkit.predictor import build_trained_model
from toolkit.record import load_checkpoint


def weight_names(state: dict) -> set:
    return {name for name in state if not name.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision resnet18 state_dict for ImageNet's 1000 classes, as torchvision saves it."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), path)
    return path


@pytest.fixture
def best_pth(trained_run):
    return runs.best_checkpoint(trained_run.run_dir)


# ---------------------------------------------------------------- pretrained start

def test_torchvision_state_dict_loads_into_resnet18_with_another_class_count(resnet18_file):
    weights = torch.load(resnet18_file, weights_only=True)
    model = get_model.build_model(9, 7)
    found = get_model.load_pretrained(model, resnet18_file)
    assert found == {"loaded": len(weight_names(weights)) - 2, "skipped": 2, "initialised": 2}
    own = model.state_dict()
    for name in weight_names(weights) - {"fc.weight", "fc.bias"}:
        assert torch.equal(own[name], weights[name]), name
    assert own["fc.weight"].shape == (7, 512)


def test_torchvision_resnet18_starts_a_small_image_resnet(resnet18_file):
    weights = torch.load(resnet18_file, weights_only=True)
    model = get_model.build_model(35, 5)
    fresh_stem = model.state_dict()["stem.0.0.weight"].clone()
    found = get_model.load_pretrained(model, resnet18_file)
    # the 7x7 stem fits no 3x3 stem, the classifier is for 5 classes; every block loads
    assert found == {"loaded": len(weight_names(weights)) - 3, "skipped": 3, "initialised": 3}
    own = model.state_dict()
    assert torch.equal(own["stem.0.1.running_var"], weights["bn1.running_var"])
    assert torch.equal(own["features.2.shortcut.0.weight"], weights["layer2.0.downsample.0.weight"])
    assert torch.equal(own["features.7.residual.2.1.weight"], weights["layer4.1.bn2.weight"])
    assert torch.equal(own["stem.0.0.weight"], fresh_stem)


def test_own_checkpoint_loads_completely_also_with_ddp_prefixes(best_pth, tmp_path):
    state = torch.load(best_pth, weights_only=True)
    model = get_model.build_model(41, 3)
    assert get_model.load_pretrained(model, best_pth) == {
        "loaded": len(weight_names(state["model"])), "skipped": 0, "initialised": 0}
    assert all(torch.equal(model.state_dict()[n], t) for n, t in state["model"].items())
    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{name}": t for name, t in state["model"].items()}, ddp)
    assert get_model.load_pretrained(get_model.build_model(41, 3), ddp)["skipped"] == 0


def test_weights_of_another_architecture_are_an_error(best_pth, tmp_path):
    with pytest.raises(UserError, match=r"matches none of ResNet's .*model_index 41 \(ResNet20\)"):
        get_model.load_pretrained(get_model.build_model(9, 3), best_pth)
    bare = tmp_path / "resnet20.pth"
    torch.save(torch.load(best_pth, weights_only=True)["model"], bare)
    with pytest.raises(UserError, match="matches none of ResNet's"):
        get_model.load_pretrained(get_model.build_model(9, 3), bare)


def test_unreadable_weights_file_is_an_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load weights"):
        get_model.load_pretrained(get_model.build_model(41, 3), path)


def test_freeze_backbone_keeps_the_classifier_trainable():
    squeezenet = get_model.build_model(40, 4)
    get_model.freeze_backbone(squeezenet)
    assert [n for n, p in squeezenet.named_parameters() if p.requires_grad] == ["classifier.1.weight",
                                                                               "classifier.1.bias"]
    resnet = models.use_cosine_classifier(get_model.build_model(41, 4), 30.0)
    get_model.freeze_backbone(resnet)
    assert [n for n, p in resnet.named_parameters() if p.requires_grad] == ["fc.weight"]


def test_freeze_backbone_training_changes_only_the_classifier(tiny, run, best_pth):
    code, out, err = run("1_train", *TRAIN_ARGS, "--epochs", "1", "--pretrained", best_pth, "--freeze-backbone",
                         *tiny.data_args)
    assert code == 0, err
    assert re.search(r"\d+ tensors loaded, 0 skipped, 0 newly initialised", out)
    before = torch.load(best_pth, weights_only=True)["model"]
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "ERM").iterdir())
    after = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"fc.weight", "fc.bias"}


def test_train_with_unusable_weights_stops_before_the_run_starts(tiny, run):
    weights = tiny.source / "broken.pth"
    weights.write_bytes(b"not a checkpoint")
    code, _, err = run("1_train", *TRAIN_ARGS, "--pretrained", weights, *tiny.data_args)
    assert code == 2 and "cannot load weights" in err
    assert not tiny.logs.exists()


# ---------------------------------------------------------------- predictions

def test_predictions_equal_2_test(trained_run, run, tmp_path):
    code, _, err = run("2_test", "--model_index", "41", "--precision", "fp32", "--no-progress", *trained_run.data_args)
    assert code == 0, err
    tested = pd.read_csv(trained_run.run_dir / "predictions.csv")
    output = tmp_path / "predictions.csv"
    code, out, err = run("5_predict", "--run", trained_run.run_dir, trained_run.data / "tiny" / "test",
                         "--output", output, "--no-progress")
    assert code == 0, err
    predicted = pd.read_csv(output)
    assert list(predicted.columns) == ["path", "predicted", "probability"] + [
        f"top{k}{suffix}" for k in (1, 2, 3) for suffix in ("", "_prob")]
    predicted["path"] = [str(p.split("tiny/", 1)[1]) for p in predicted["path"]]
    both = tested.merge(predicted, on="path", suffixes=("_tested", "_predicted"))
    assert len(both) == len(tested) == len(predicted) == 4
    assert (both["predicted_tested"] == both["predicted_predicted"]).all()
    # probabilities are in %: 1e-3 % is 1e-5
    assert np.allclose(both["probability_tested"], both["probability_predicted"], atol=1e-3)


def test_unreadable_files_are_listed_and_skipped(trained_run, run, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(trained_run.data / "tiny" / "test", folder)
    (folder / "alpha" / "broken.png").write_bytes(b"not a png")
    (folder / "readme.txt").write_text("other files in folders are ignored")
    notes = tmp_path / "notes.txt"
    notes.write_text("named explicitly, so reported")
    output = tmp_path / "predictions.csv"
    code, out, err = run("5_predict", "--run", trained_run.run_dir, folder, notes, tmp_path / "missing.png",
                         "--output", output, "--no-progress")
    assert code == 1
    assert "skipped 3 file(s)" in err
    assert "broken.png" in err and "notes.txt: not an image" in err and "missing.png: no such file" in err
    assert "readme.txt" not in err
    predicted = pd.read_csv(output)
    assert len(predicted) == 4 and not predicted["path"].str.contains("broken").any()


def test_run_without_checkpoint_is_an_error(trained_run, run, tmp_path):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    shutil.copy(trained_run.run_dir / "args.json", empty_run)
    code, _, err = run("5_predict", "--run", empty_run, trained_run.data / "tiny" / "test")
    assert code == 2 and "has no checkpoint" in err


def manual_probabilities(run_dir, path, mirror=False):
    """One image's class probabilities with plain PIL and torch (no toolkit loader)."""
    trained = load_checkpoint(runs.best_checkpoint(run_dir))
    model, state = build_trained_model(trained, run_dir), trained.to_state()
    image = Image.open(path).convert("RGB").resize((state["width"], state["height"]), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None]
    if mirror:
        x = x.flip(3)
    x = (x / 255 - torch.tensor(state["mean"]).view(1, 3, 1, 1)) / torch.tensor(state["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x).softmax(1)[0].double().numpy(), state["class_names"]


def test_tta_averages_the_image_and_its_mirror(trained_run, run, tmp_path):
    path = sorted((trained_run.data / "tiny" / "test" / "gamma").iterdir())[0]
    output = tmp_path / "predictions.csv"
    code, _, err = run("5_predict", "--run", trained_run.run_dir, path, "--tta", "--output", output, "--no-progress")
    assert code == 0, err
    plain, names = manual_probabilities(trained_run.run_dir, path)
    mirrored, _ = manual_probabilities(trained_run.run_dir, path, mirror=True)
    expected = 100 * (plain + mirrored) / 2
    row = pd.read_csv(output).iloc[0]
    for k in (1, 2, 3):
        assert row[f"top{k}_prob"] == pytest.approx(expected[names.index(row[f"top{k}"])], abs=1e-3)
    assert row["predicted"] == names[int(expected.argmax())]


# ---------------------------------------------------------------- export

@pytest.fixture
def run_copy(trained_run, tmp_path):
    """The trained run copied, so exports do not add files to the shared run."""
    return shutil.copytree(trained_run.run_dir, tmp_path / "run")


def test_onnx_export_matches_pytorch(run_copy, run):
    code, out, err = run("5_predict", "--run", run_copy, "--export", "onnx", "--no-progress")
    assert code == 0, err
    difference = float(re.search(r"max abs difference of the probabilities (\S+)", out).group(1))
    assert difference < 1e-4
    assert "4 images of tiny's test split" in out
    described = json.loads((run_copy / "classes.json").read_text())
    assert described["class_names"] == ["alpha", "beta", "gamma"]
    assert described["input"]["range"] == [0, 255] and described["input"]["channels"] == "RGB"
    session = onnxruntime.InferenceSession(str(run_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        probabilities = session.run(None, {"images": np.full((batch, 3, 16, 16), 128, np.float32)})[0]
        assert probabilities.shape == (batch, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_tampered_onnx_export_fails_loudly(run_copy, run, monkeypatch):
    write_onnx = export.write_onnx

    def write_tampered(deployed, path, height, width):
        write_onnx(deployed, path, height, width)
        model = onnx.load(str(path))
        classifier = next(node for node in model.graph.node if node.op_type == "Gemm").input[1]
        weight = next(i for i in model.graph.initializer if i.name == classifier)
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), classifier))
        onnx.save(model, str(path))

    monkeypatch.setattr(export, "write_onnx", write_tampered)
    code, out, err = run("5_predict", "--run", run_copy, "--export", "onnx", "--no-progress")
    assert code == 2
    assert "the exported model does not match PyTorch" in err
    assert not (run_copy / "model.onnx").exists()
