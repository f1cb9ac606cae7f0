"""Models by name (torchvision's, timm's), --pretrained imagenet through the libraries' own caches,
safetensors and timm checkpoints, --finetune full|last-stage|linear and --backbone-lr-scale.

No download ever: each library's cache is a temporary folder seeded with weights saved from the
architecture's own random initialisation under the file name the library expects, so the
library's real loading path runs; an empty cache gives the offline error."""
import json
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import torchvision
from conftest import TRAIN_ARGS
from safetensors.torch import save_file

import get_model
from toolkit import finetune, runs
from toolkit.predictor import Predictor
from toolkit.record import load_checkpoint

SMALL = ["--height", "32", "--width", "32", "--epochs", "2", "--batchsize", "8", "--lr", "0.05", "--lrstep", "100",
         "--no-progress"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
TIMM_REPO = "timm/test_resnet.r160_in1k"  # timm's tiniest ResNet with published weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, offline (HF_HUB_OFFLINE=1: no library fetches anything)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Path(torch.hub.get_dir()) / "checkpoints"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, offline (huggingface_hub read HF_HOME when imported)."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def seed_torchvision(checkpoints: Path, name: str) -> dict:
    """torchvision's ImageNet file of `name`, as its cache holds it, from a random initialisation."""
    torch.manual_seed(3)
    state = torchvision.models.get_model(name, num_classes=1000).state_dict()
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoints / Path(torchvision.models.get_model_weights(name).DEFAULT.url).name)
    return state


def seed_timm(cache: Path, arch: str = "test_resnet", repo: str = TIMM_REPO) -> dict:
    """The hub cache's layout of timm's weights: refs/main names a snapshot holding model.safetensors."""
    torch.manual_seed(4)
    state = timm.create_model(arch, num_classes=1000).state_dict()
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "snapshots" / commit / "model.safetensors")
    return state


def only_run_dir(logs: Path) -> Path:
    found = runs.list_runs(logs)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- names

def test_names_resolve_to_the_table_torchvision_and_timm():
    assert get_model.named_spec("resnet18") is get_model.MODELS[9]
    assert get_model.named_spec("ResNet32") is get_model.MODELS[42]
    assert get_model.named_spec("mobilenet_v3_small").min_size == 1  # torchvision's weights record it
    model = get_model.build_model("timm/test_resnet", 5, 32, 32)
    assert model.fc.out_features == 5
    with pytest.raises(get_model.UserError, match=r"did you mean .*resnet18"):
        get_model.model_spec("resnt18")
    with pytest.raises(get_model.UserError, match=r"did you mean .*timm/test_resnet"):
        get_model.model_spec("timm/test_resnt")


def test_a_named_model_too_small_for_the_images_gets_a_clear_error():
    with pytest.raises(get_model.UserError, match="needs images of at least 21x21"):
        get_model.build_model("squeezenet1_0", 3, 16, 16)
    with pytest.raises(get_model.UserError, match=r"timm/test_vit cannot take 8x8 images.*160x160"):
        get_model.build_model("timm/test_vit", 3, 8, 8)


def test_list_prints_the_matching_names_and_which_have_imagenet_weights(capsys):
    assert get_model.main(["--list", "timm/test_resnet*"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["timm/test_resnet", "timm", "yes"] in rows
    assert get_model.main(["--list", "*mobilenet_v3*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert names == ["mobilenet_v3_large", "mobilenet_v3_small"]


# ---------------------------------------------------------------- what trains

def test_last_stage_of_a_cifar_resnet_is_its_last_five_blocks_and_the_classifier():
    model = get_model.build_model(42, 3)  # ResNet32: 3 stages of 5 blocks, the third at the smallest map
    names = get_model.last_stage_parameters(model, 32, 32)
    expected = {f"blocks.{b}.{p}" for b in range(10, 15)
                for p in ("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias")}
    assert names == expected | {"fc.weight", "fc.bias"}


def test_last_stage_of_timm_and_torchvision_resnets_is_layer4_and_fc():
    for model in (get_model.build_model("timm/test_resnet", 3), get_model.build_model("resnet18", 3)):
        names = get_model.last_stage_parameters(model, 64, 64)
        assert names == {n for n, _ in model.named_parameters() if n.startswith(("layer4.", "fc."))}


def test_backbone_learning_rate_is_scaled_and_the_classifier_comes_first():
    model = get_model.build_model(42, 3)
    finetune.freeze(model, "last-stage", 32, 32)
    head, backbone = finetune.parameter_groups(model, 0.1, 0.25)
    assert head["initial_lr"] == 0.1 and backbone["initial_lr"] == pytest.approx(0.025)
    assert [p.shape for p in head["params"]] == [torch.Size([3, 64]), torch.Size([3])]
    assert len(backbone["params"]) == 30
    [whole] = finetune.parameter_groups(model, 0.1, 1.0)  # scale 1: one group, as before the option
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(whole["params"]) == len(trainable) and all(a is b for a, b in zip(whole["params"], trainable))
    finetune.freeze(model, "linear", 32, 32)
    assert len(finetune.parameter_groups(model, 0.1, 0.25)) == 1


# ---------------------------------------------------------------- weight files

def test_safetensors_and_timm_checkpoints_load(tmp_path):
    torch.manual_seed(5)
    state = get_model.build_model(42, 10).state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"epoch": 3, "arch": "resnet32", "state_dict": {k: v * 0 for k, v in state.items()},
                "state_dict_ema": state}, tmp_path / "timm.pth.tar")
    for path in (tmp_path / "w.safetensors", tmp_path / "timm.pth.tar"):
        model = get_model.build_model(42, 4)
        found = get_model.load_pretrained(model, path)
        assert found == {"loaded": len(state) - 2 - 31, "skipped": 2, "initialised": 2}  # 31 BN counters
        assert torch.equal(model.state_dict()["blocks.3.conv1.weight"], state["blocks.3.conv1.weight"])


# ---------------------------------------------------------------- --pretrained imagenet, end to end

def test_torchvision_imagenet_linear_probe_trains_on_cached_features(tiny, run, torch_home, monkeypatch):
    """The seeded file loads through torchvision's own cache path; the backbone stays as loaded; the
    features are cached beside the dataset and read back by the next run; LDAM (a cosine classifier),
    DRW and class sampling train on them; 2_test.py's predictor gives the head's logits of them."""
    seeded = seed_torchvision(torch_home, "mobilenet_v3_small")
    argv = ["--model", "mobilenet_v3_small", "--pretrained", "imagenet", "--finetune", "linear", "--objective",
            "LDAM", "--drw", "2", "--sampler", "class", *SMALL, "--epochs", "3", *tiny.data_args]
    code, out, err = run("1_train", *argv)
    assert code == 0, err
    # LDAM's cosine classifier has no bias: one new tensor
    assert "pretrained MobileNet_V3_Small_Weights.IMAGENET1K_V1: 208 tensors loaded, 2 skipped, 1 newly" in out
    run_dir = only_run_dir(tiny.logs)
    assert run_dir.parent == tiny.logs / "mobilenet_v3_small" / "tiny" / "LDAM-DRW-linear"
    args = json.loads((run_dir / "args.json").read_text())
    assert (args["model_index"], args["model_name"], args["finetune"], args["augment"]) == (
        None, "mobilenet_v3_small", "linear", "none")
    assert args["pretrained_weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert args["mean"] == pytest.approx(IMAGENET_MEAN)

    trained = load_checkpoint(runs.best_checkpoint(run_dir)).model
    for name in ("features.0.0.weight", "features.12.1.running_var", "classifier.0.weight"):
        assert torch.equal(trained[name], seeded[name]), name  # frozen: exactly as loaded
    cached = sorted((tiny.data / "tiny" / ".cache").glob("features-*.pt"))
    assert [p.name.split("-")[1] for p in cached] == ["train", "valid"]

    valid = torch.load(cached[1], weights_only=True)["features"]
    predictor = Predictor.of_run(run_dir, device="cpu", precision="fp32")
    from toolkit import data
    split = data.scan_dataset(tiny.data / "tiny")["valid"]
    _, logits = predictor.predict(data.load_images(split, 32, 32, "cpu", progress=False), progress=False)
    head = get_model.classifier_layer(predictor.model)
    assert torch.allclose(logits, head(valid).float(), atol=1e-4)

    def never(*a, **k):
        raise AssertionError("the cached features were computed again")
    monkeypatch.setattr(finetune, "compute_features", never)
    code, _, err = run("1_train", *argv)
    assert code == 0, err


def test_timm_imagenet_last_stage_trains_layer4_and_the_classifier_only(tiny, run, hf_cache):
    seeded = seed_timm(hf_cache)
    code, out, err = run("1_train", "--model", "timm/test_resnet", "--pretrained", "imagenet", "--finetune",
                         "last-stage", "--backbone-lr-scale", "0.5", *SMALL, *tiny.data_args)
    assert code == 0, err
    assert f"pretrained {TIMM_REPO}:" in out and "2 newly initialised" in out
    run_dir = only_run_dir(tiny.logs)
    assert run_dir.parent == tiny.logs / "timm-test_resnet" / "tiny" / "ERM-last-stage"
    args = json.loads((run_dir / "args.json").read_text())
    assert args["mean"] == [0.5, 0.5, 0.5] and args["pretrained_weights"] == TIMM_REPO
    trained = load_checkpoint(runs.best_checkpoint(run_dir)).model
    assert torch.equal(trained["conv1.0.weight"], seeded["conv1.0.weight"])
    assert torch.equal(trained["layer3.0.conv1.weight"], seeded["layer3.0.conv1.weight"])
    assert not torch.equal(trained["layer4.0.conv1.weight"], seeded["layer4.0.conv1.weight"])
    assert Predictor.of_run(run_dir, device="cpu").record.model == "timm/test_resnet"


@pytest.mark.parametrize("model, url_part, folder_part", [
    ("resnet18", "download.pytorch.org/models/resnet18-f37072fd.pth", "hub/checkpoints"),
    ("timm/test_resnet", f"huggingface.co/{TIMM_REPO}/resolve/main/model.safetensors",
     "models--timm--test_resnet.r160_in1k"),
])
def test_no_cached_weights_offline_is_one_error_naming_the_file_and_folder(tiny, run, torch_home, hf_cache, model,
                                                                          url_part, folder_part):
    code, out, err = run("1_train", "--model", model, "--pretrained", "imagenet", *SMALL, *tiny.data_args)
    assert code == 2
    assert err.startswith("error: --pretrained imagenet: the weights are not in the cache") and err.count("\n") == 1
    assert url_part in err and folder_part in err
    assert not tiny.logs.exists()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("extra, message", [
    (["--model", "resnt18"], "unknown --model 'resnt18': did you mean resnet18"),
    (["--model", "resnet18", "--model_index", "41"], "both name the network"),
    (["--model_index", "41", "--pretrained", "imagenet"], "ResNet20 has no ImageNet weights"),
    (["--model", "timm/test_mambaout", "--pretrained", "imagenet"], "timm publishes no weights for test_mambaout"),
    (["--model", "resnet18", "--pretrained", "imagenet", "--finetune", "linear", "--augment", "pad-crop-flip"],
     "--augment would never apply"),
    (["--model", "resnet18", "--pretrained", "imagenet", "--finetune", "linear", "--mixup", "0.2", "--cutmix", "1"],
     "--mixup and --cutmix would never apply"),
    (["--model", "resnet18", "--backbone-lr-scale", "0"], "must be in (0, 1]"),
    (["--model", "resnet18", "--backbone-lr-scale", "1.5"], "must be in (0, 1]"),
    (["--model", "resnet18", "--finetune", "last-stage"], "add --pretrained imagenet"),
])
def test_bad_input_is_one_error_line_and_nothing_written(tiny, run, torch_home, extra, message):
    argv = [a for a in TRAIN_ARGS if a not in ("--model_index", "41")] + extra + tiny.data_args
    code, out, err = run("1_train", *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not tiny.logs.exists() and not list((tiny.data / "tiny").glob(".cache/features-*"))


def test_linear_refuses_a_network_whose_classifier_is_not_its_last_layer(tiny, run, torch_home):
    seed_torchvision(torch_home, "squeezenet1_0")
    code, out, err = run("1_train", "--model", "squeezenet1_0", "--pretrained", "imagenet", "--finetune", "linear",
                         *SMALL, *tiny.data_args)
    assert code == 2 and "classifier layer is not its last" in err
    assert not tiny.logs.exists()


def test_a_search_on_cached_features_draws_no_mixup_and_computes_the_features_once(tiny, run, tmp_path):
    torch.manual_seed(6)
    start = tmp_path / "start.pth"
    torch.save(get_model.build_model(41, 3).state_dict(), start)
    argv = [*TRAIN_ARGS, *tiny.data_args, "--pretrained", start, "--finetune", "linear", "--objectives", "ERM", "LA",
            "--trials", "3", "--finalists", "0", "--pruner", "none"]
    code, out, err = run("7_search", *argv)
    assert code == 0, err
    (search_dir,) = (tiny.logs / "search" / "tiny").iterdir()  # a search's runs live in its own folder
    trials = runs.list_runs(search_dir / "runs" / "ResNet20")
    assert len(trials) == 3 and all(d.parent.name.endswith("-linear") for d in trials)  # e.g. LA-SAM-linear
    assert all(json.loads((d / "args.json").read_text())["mixup"] is None for d in trials)
    assert len(list((tiny.data / "tiny" / ".cache").glob("features-*.pt"))) == 2  # train and valid, once


def test_a_linear_run_resumed_ends_where_the_uninterrupted_one_does(tiny, run, tmp_path):
    torch.manual_seed(7)
    start = tmp_path / "start.pth"
    torch.save(get_model.build_model(41, 3).state_dict(), start)
    argv = [*TRAIN_ARGS, *tiny.data_args, "--pretrained", start, "--finetune", "linear", "--objective", "LA",
            "--sampler", "sqrt", "--deterministic"]
    assert run("1_train", *argv, "--epochs", "3")[0] == 0
    whole = only_run_dir(tiny.logs)
    assert run("1_train", *argv, "--epochs", "2", "--logs-root", tmp_path / "resumed")[0] == 0
    part = only_run_dir(tmp_path / "resumed")
    code, _, err = run("1_train", "--resume", part, "--epochs", "3", "--no-progress")
    assert code == 0, err
    ends = [load_checkpoint(d / "last.pth").model for d in (whole, part)]
    assert ends[0].keys() == ends[1].keys()
    assert all(torch.equal(ends[0][name], ends[1][name]) for name in ends[0])
    # the resumed run's features are the trained backbone's, read from the cache: none computed anew
    assert len(list((tiny.data / "tiny" / ".cache").glob("features-*.pt"))) == 2
