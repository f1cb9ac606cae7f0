"""One table: model_index -> (name, constructor, smallest image size). Run it to print the table.

0-34 are torchvision's architectures in the seed project's order, 35-43 our own nets for small
images (models/). The numbering is what users type (`--model_index 9`), so new models are appended.
"""
import re
import sys
from functools import partial
from typing import Callable, NamedTuple

import torch
import torchvision
from torch import nn

import models
from toolkit import cli
from toolkit.cli import UserError


class ModelSpec(NamedTuple):
    name: str
    constructor: Callable[[int], nn.Module]  # num_classes -> model
    min_size: int  # smallest height and width, in pixels, a forward pass accepts


def torchvision_model(name: str, num_classes: int, **options) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **options)


def tv(name: str, min_size: int, **options) -> ModelSpec:
    return ModelSpec(name, partial(torchvision_model, name, **options), min_size)


# googlenet and inception_v3 return a plain tensor only without their auxiliary heads;
# init_weights=True asks for their paper's initialisation (and silences a warning).
SINGLE_OUTPUT = dict(aux_logits=False, init_weights=True)

# min_size was measured: a forward pass (eval and train mode, batch of 2) works at every square
# size from it up to 100 pixels and fails one pixel below it. Our own nets pool adaptively.
MODELS = (
    tv("alexnet", 63),
    tv("vgg11", 32),
    tv("vgg11_bn", 32),
    tv("vgg13", 32),
    tv("vgg13_bn", 32),
    tv("vgg16", 32),
    tv("vgg16_bn", 32),
    tv("vgg19", 32),
    tv("vgg19_bn", 32),
    tv("resnet18", 1),
    tv("resnet34", 1),
    tv("resnet50", 1),
    tv("resnet101", 1),
    tv("resnet152", 1),
    tv("squeezenet1_0", 21),
    tv("squeezenet1_1", 17),
    tv("densenet121", 29),
    tv("densenet169", 29),
    tv("densenet161", 29),
    tv("densenet201", 29),
    tv("inception_v3", 75, **SINGLE_OUTPUT),
    tv("googlenet", 15, **SINGLE_OUTPUT),
    tv("shufflenet_v2_x0_5", 1),
    tv("shufflenet_v2_x1_0", 1),
    tv("shufflenet_v2_x1_5", 1),
    tv("shufflenet_v2_x2_0", 1),
    tv("mobilenet_v2", 1),
    tv("resnext50_32x4d", 1),
    tv("resnext101_32x8d", 1),
    tv("wide_resnet50_2", 1),
    tv("wide_resnet101_2", 1),
    tv("mnasnet0_5", 1),
    tv("mnasnet0_75", 1),
    tv("mnasnet1_0", 1),
    tv("mnasnet1_3", 1),
    ModelSpec("SmallResNet18", models.small_resnet18, 1),
    ModelSpec("SmallResNet34", models.small_resnet34, 1),
    ModelSpec("SmallResNet50", models.small_resnet50, 1),
    ModelSpec("SmallResNet101", models.small_resnet101, 1),
    ModelSpec("SmallResNet152", models.small_resnet152, 1),
    ModelSpec("SmallSqueezeNet", models.SmallSqueezeNet, 1),
    ModelSpec("ResNet20", models.resnet20, 1),
    ModelSpec("ResNet32", models.resnet32, 1),
    ModelSpec("ResNet56", models.resnet56, 1),
)


def model_spec(index: int) -> ModelSpec:
    if not 0 <= index < len(MODELS):
        raise UserError(f"unknown model index {index}: valid indices are 0-{len(MODELS) - 1}; "
                        f"run `python get_model.py` for the table")
    return MODELS[index]


def model_name(index: int) -> str:
    return model_spec(index).name


def build_model(index: int, num_classes: int, height: int = 32, width: int = 32) -> nn.Module:
    """The model at `index` for `num_classes` classes, checked to accept height x width images."""
    spec = model_spec(index)
    if num_classes < 1:
        raise UserError(f"a model needs at least 1 class, got num_classes={num_classes}")
    if min(height, width) < spec.min_size:
        size = spec.min_size
        raise UserError(f"{spec.name} needs images of at least {size}x{size} pixels, got "
                        f"{height}x{width}; pass --height {size} --width {size} or larger")
    return spec.constructor(num_classes)


def cosine_scale(model: nn.Module):
    """The scale of the model's cosine classifier (LDAM's), or None for a plain one."""
    heads = [m for m in model.modules() if isinstance(m, models.CosineLinear)]
    return heads[-1].scale if heads else None


# ---------------------------------------------------------------- pretrained weights

def load_pretrained(model: nn.Module, path) -> dict:
    """Copy every tensor of a local weights file that fits `model` (same name, same shape) into it.

    The file is a torchvision state_dict or a .pth of this toolkit. Returns the counts of weight
    tensors `loaded`, `skipped` (in the file, not used) and `initialised` (in the model, left as
    built, e.g. a classifier for another class count). BatchNorm's num_batches_tracked counters
    are loaded where they fit but not counted: older torchvision files lack them."""
    weights, saved_index = read_weights(path)
    if isinstance(model, models.SmallResNet) and any(name.startswith("layer1.") for name in weights):
        weights = small_resnet_names(weights, model)
    own = model.state_dict()
    fitting = {name: t for name, t in weights.items() if name in own and own[name].shape == t.shape}
    if not any(t.dim() >= 2 for t in fitting.values()):  # a bias or a counter alone is chance
        raise UserError(f"{path} matches none of {type(model).__name__}'s convolution or linear weights; "
                        f"{architecture_hint(saved_index)}")
    model.load_state_dict(fitting, strict=False)
    loaded = sum(1 for name in fitting if is_weight(name))
    return {"loaded": loaded,
            "skipped": sum(1 for name in weights if is_weight(name)) - loaded,
            "initialised": sum(1 for name in own if is_weight(name)) - loaded}


def is_weight(name: str) -> bool:
    return not name.endswith("num_batches_tracked")


def read_weights(path) -> tuple:
    """The state_dict in a weights file, read as tensors and plain values only (no code runs),
    and the model_index a checkpoint of this toolkit records (else None)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, damaged or pickled with code: the same to the user
        raise UserError(f"cannot load weights {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"pass a state_dict saved with torch.save or a .pth of this toolkit") from None
    saved_index = state.get("model_index") if isinstance(state, dict) else None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):  # this toolkit's checkpoints; Lightning's and timm's
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = {name: t for name, t in state.items() if isinstance(t, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise UserError(f"{path} holds no state_dict of tensors; pass a state_dict saved with torch.save "
                        f"or a .pth of this toolkit")
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel's and torch.compile's wrappers
        if all(name.startswith(prefix) for name in tensors):
            tensors = {name[len(prefix):]: t for name, t in tensors.items()}
    return tensors, saved_index


def architecture_hint(index) -> str:
    if isinstance(index, int) and 0 <= index < len(MODELS):
        return f"it holds weights for model_index {index} ({MODELS[index].name}): pass --model_index {index}"
    return "are they weights of another network? pass the --model_index they were trained as (see python get_model.py)"


def small_resnet_names(weights: dict, model: nn.Module) -> dict:
    """Rename torchvision ResNet tensors to SmallResNet's (the same stages and blocks, other names),
    so ImageNet ResNet weights can start a small-image ResNet (indices 35-39). Their 7x7 stem
    does not fit the 3x3 one; blocks beyond the model's stage lengths keep their names and are skipped."""
    widths = [block.residual[-1][1].num_features for block in model.features]
    starts = [i for i, width in enumerate(widths) if i == 0 or width != widths[i - 1]]
    ends = starts[1:] + [len(widths)]

    def rename(name: str) -> str:
        stem = re.fullmatch(r"(conv1|bn1)\.(.+)", name)
        if stem:
            return f"stem.0.{0 if stem[1] == 'conv1' else 1}.{stem[2]}"
        block = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", name)
        if not block:
            return name  # fc.*
        stage, index, rest = int(block[1]) - 1, int(block[2]), block[3]
        if stage >= len(starts) or starts[stage] + index >= ends[stage]:
            return name
        rest = re.sub(r"^conv(\d)", lambda m: f"residual.{2 * (int(m[1]) - 1)}.0", rest)
        rest = re.sub(r"^bn(\d)", lambda m: f"residual.{2 * (int(m[1]) - 1)}.1", rest)
        rest = re.sub(r"^downsample\.", "shortcut.", rest)
        return f"features.{starts[stage] + index}.{rest}"

    return {rename(name): t for name, t in weights.items()}


def freeze_backbone(model: nn.Module) -> None:
    """Train only the classifier layer: every other parameter gets requires_grad=False."""
    classifier = classifier_layer(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in classifier.parameters():
        parameter.requires_grad_(True)


def classifier_layer(model: nn.Module) -> nn.Module:
    """The last nn.Linear or CosineLinear; for nets without one (SqueezeNet), the last convolution."""
    for kinds in ((nn.Linear, models.CosineLinear), (nn.Conv2d,)):
        found = [module for module in model.modules() if isinstance(module, kinds)]
        if found:
            return found[-1]
    raise UserError(f"{type(model).__name__} has no linear or convolutional classifier layer to train; "
                    f"--freeze-backbone needs one, pick another --model_index")


def parameter_count(spec: ModelSpec, num_classes: int = 10) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        model = spec.constructor(num_classes)
    return sum(parameter.numel() for parameter in model.parameters())


def print_table(argv=None) -> int:
    parser = cli.ArgumentParser(prog="get_model.py", description=(
        "Print the model table: the index to pass as --model_index, the name, the parameter count "
        "for 10 classes, and the smallest image height and width the model accepts."))
    parser.parse_args(argv)
    print(f"{'index':>5}  {'name':<20} {'params (10 classes)':>19}  {'min size':>8}")
    for index, spec in enumerate(MODELS):
        params = parameter_count(spec)
        print(f"{index:>5}  {spec.name:<20} {params:>19,}  {spec.min_size:>8}")
    return 0


def main(argv=None) -> int:
    return cli.run_main(print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
