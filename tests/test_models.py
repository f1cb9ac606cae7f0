"""The model table: every index builds and runs, min sizes are exact, the cosine classifier."""
import re

import pytest
import torch
import torch.nn.functional as F

import get_model
from get_model import MODELS, build_model, model_name
from models import CosineLinear, use_cosine_classifier
from toolkit.cli import UserError

CLASSES = 7
SIZE = 32



def logits_for(model, height, width=None):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, height, width or height))


def zero_init(tensor, *args, **kwargs):
    with torch.no_grad():
        return tensor.zero_()


@pytest.fixture
def zero_weight_init(monkeypatch):
    """Shapes and size limits do not depend on the weights' values, and drawing the random
    weights (100M+ numbers for each VGG) would be most of this file's run time. Zeros, not
    skipped init: left-over memory full of denormal floats makes a forward pass 10x slower."""
    for name in dir(torch.nn.init):
        if name.endswith("_") and not name.startswith("_"):
            monkeypatch.setattr(torch.nn.init, name, zero_init)


@pytest.mark.parametrize("index", range(len(MODELS)), ids=[spec.name for spec in MODELS])
def test_every_model_classifies_at_32_or_its_min_size(index, zero_weight_init):
    min_size = MODELS[index].min_size
    if min_size > SIZE:
        with pytest.raises(UserError, match=rf"at least {min_size}x{min_size}"):
            build_model(index, CLASSES, SIZE, SIZE)
    # One build, then the sizes that matter: 32 (or the min size), the min size, one pixel less.
    model = build_model(index, CLASSES, max(SIZE, min_size), max(SIZE, min_size))
    assert logits_for(model, max(SIZE, min_size)).shape == (2, CLASSES)
    assert logits_for(model, min_size).shape == (2, CLASSES)
    if min_size > 1:  # the table's number is the smallest: one pixel less fails
        with pytest.raises(RuntimeError):
            logits_for(model, min_size - 1)


def test_min_size_error_tells_the_user_what_to_pass():
    with pytest.raises(UserError) as error:
        build_model(0, CLASSES, 224, 32)  # width too small is enough
    assert str(error.value) == ("alexnet needs images of at least 63x63 pixels, got 224x32; "
                                "pass --height 63 --width 63 or larger")


@pytest.mark.parametrize("index", [35, 40, 41])
def test_own_nets_take_non_square_odd_sizes(index):
    model = build_model(index, CLASSES, 17, 45)
    assert logits_for(model, 17, 45).shape == (2, CLASSES)


def test_model_names_keep_the_seed_numbering():
    assert model_name(0) == "alexnet"
    assert model_name(9) == "resnet18"
    assert model_name(20) == "inception_v3"
    assert model_name(34) == "mnasnet1_3"
    assert [model_name(i) for i in range(35, 44)] == [
        "SmallResNet18", "SmallResNet34", "SmallResNet50", "SmallResNet101", "SmallResNet152",
        "SmallSqueezeNet", "ResNet20", "ResNet32", "ResNet56"]
    assert model_name(42) == "ResNet32"


@pytest.mark.parametrize("index", [-1, len(MODELS)])
def test_unknown_index_lists_the_valid_range(index):
    with pytest.raises(UserError, match=rf"0-{len(MODELS) - 1}.*python get_model\.py"):
        model_name(index)
    with pytest.raises(UserError, match=rf"0-{len(MODELS) - 1}"):
        build_model(index, CLASSES)


def test_names_are_unique_even_ignoring_case():
    # run folders are named after models, and some file systems ignore case
    names = [spec.name.lower() for spec in MODELS]
    assert len(set(names)) == len(names) == len(MODELS)


@pytest.mark.parametrize("index, paper_millions", [(41, 0.27), (42, 0.46), (43, 0.85)])
def test_cifar_resnet_parameter_counts_match_the_paper(index, paper_millions):
    params = sum(p.numel() for p in build_model(index, 10).parameters())
    assert params / 1e6 == pytest.approx(paper_millions, rel=0.02)


@pytest.mark.parametrize("index", [35, 37, 41])
def test_own_nets_use_kaiming_normal_convs_and_unit_batchnorm(index):
    torch.manual_seed(0)
    model = build_model(index, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = max(convs, key=lambda m: m.weight.numel())  # the most weights: the tightest std
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert abs(conv.weight.mean().item()) < 0.1 * conv.weight.std().item()
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in batchnorms)


def test_cifar_resnet_shortcuts_have_no_parameters():
    model = build_model(41, 10)
    shortcut_params = [name for name, _ in model.named_parameters() if "shortcut" in name]
    assert shortcut_params == []


def test_cosine_classifier_outputs_scale_times_cosine():
    torch.manual_seed(0)
    scale = 30.0
    model = use_cosine_classifier(build_model(41, CLASSES), scale)
    assert isinstance(model.fc, CosineLinear)
    assert dict(model.fc.named_parameters()).keys() == {"weight"}  # no bias
    assert model.fc.weight.shape == (CLASSES, 64)

    with torch.no_grad():
        model.fc.weight.mul_(3.0)  # rows of length 3: the output must not depend on it
    seen = {}
    model.fc.register_forward_hook(lambda module, inputs, output: seen.update(features=inputs[0]))
    logits = logits_for(model, SIZE)
    features, weight = seen["features"], model.fc.weight.detach()
    cosine = F.cosine_similarity(features[:, None, :], weight[None, :, :], dim=2)
    torch.testing.assert_close(logits, scale * cosine)
    assert (logits.abs() <= scale * (1 + 1e-6)).all()
    assert logits.abs().max() > 0.01 * scale  # not a degenerate all-zero output


def test_cosine_classifier_ignores_lengths():
    layer = CosineLinear(4, 2, scale=10.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, -3.0]]))
    logits = layer(torch.tensor([[5.0, 0, 0, 0], [0, 0, 0, 0.5]]))
    torch.testing.assert_close(logits, torch.tensor([[10.0, 0.0], [0.0, -10.0]]))


def test_cosine_classifier_replaces_a_nested_last_linear():
    torch.manual_seed(0)
    model = use_cosine_classifier(build_model(31, CLASSES), scale=16.0)  # mnasnet0_5
    assert isinstance(model.classifier[-1], CosineLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    logits = logits_for(model, SIZE)
    assert logits.shape == (2, CLASSES)
    assert (logits.abs() <= 16.0 * (1 + 1e-6)).all()


@pytest.mark.parametrize("index, class_name", [(14, "SqueezeNet"), (40, "SmallSqueezeNet")])
def test_cosine_classifier_refuses_a_conv_classifier(index, class_name):
    with pytest.raises(UserError, match=rf"^{class_name} has no nn.Linear classifier"):
        use_cosine_classifier(build_model(index, CLASSES), scale=30.0)


def test_main_prints_one_row_per_model(capsys):
    assert get_model.main([]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == len(MODELS)
    assert [(int(row[0]), row[1]) for row in rows] == [(i, s.name) for i, s in enumerate(MODELS)]
    resnet20 = rows[41]
    resnet20_params = sum(p.numel() for p in build_model(41, 10).parameters())
    assert int(resnet20[2].replace(",", "")) == resnet20_params
    assert int(resnet20[3]) == MODELS[41].min_size
    assert int(rows[20][3]) == 75


def test_main_rejects_unknown_arguments(capsys):
    assert get_model.main(["--bogus"]) == 2
    assert re.match(r"error: .*--bogus", capsys.readouterr().err)
