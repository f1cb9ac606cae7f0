"""One table: model_index -> (name, constructor, smallest image size). Run it to print the table.

0-34 are torchvision's architectures in the seed project's order, 35-43 our own nets for small
images (models/). The numbering is what users type (`--model_index 9`), so new models are appended.
Beside the table, `--model NAME` takes any classification model of torchvision or `timm/NAME` of
timm's by name (`python get_model.py --list [PATTERN]`), and `--pretrained imagenet` their own
ImageNet weights through the libraries' caches (see docs/models-in-use.md).
"""
import difflib
import fnmatch
import os
import re
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
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
    min_size: int | None  # smallest height and width, in pixels, a forward pass accepts (None: probed)


def torchvision_model(name: str, num_classes: int, **options) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **options)


def tv(name: str, min_size: int, **options) -> ModelSpec:
    return ModelSpec(name, partial(torchvision_model, name, **options), min_size)


# googlenet and inception_v3 return a plain tensor only without their auxiliary heads;
# init_weights=True asks for their paper's initialisation (and silences a warning).
SINGLE_OUTPUT = dict(aux_logits=False, init_weights=True)
SINGLE_OUTPUT_MODELS = ("googlenet", "inception_v3")

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


def model_spec(model: int | str) -> ModelSpec:
    """The row of a model: a table index (--model_index), or a name (--model)."""
    if isinstance(model, str):
        return named_spec(model)
    if not 0 <= model < len(MODELS):
        raise UserError(f"unknown model index {model}: valid indices are 0-{len(MODELS) - 1}; "
                        f"run `python get_model.py` for the table")
    return MODELS[model]


def model_name(model: int | str) -> str:
    return model_spec(model).name


def build_model(model: int | str, num_classes: int, height: int = 32, width: int = 32) -> nn.Module:
    """The model (a table index or a name) for `num_classes` classes, checked to accept height x
    width images."""
    spec = model_spec(model)
    if num_classes < 1:
        raise UserError(f"a model needs at least 1 class, got num_classes={num_classes}")
    if spec.min_size is not None and min(height, width) < spec.min_size:
        size = spec.min_size
        raise UserError(f"{spec.name} needs images of at least {size}x{size} pixels, got "
                        f"{height}x{width}; pass --height {size} --width {size} or larger")
    built = spec.constructor(num_classes)
    if spec.min_size is None:
        probe_input_size(built, spec.name, height, width)
    return built


def probe_input_size(model: nn.Module, name: str, height: int, width: int):
    """A model whose smallest size is not in the table is refused at a size it cannot take with the
    same clear error, before any image is decoded."""
    try:
        blank_forward(model, height, width)
    except Exception as e:  # a too-small map fails deep inside the model, with its own message
        raise UserError(f"{name} cannot take {height}x{width} images ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}); pass a larger --height and --width, e.g. its "
                        f"pretrained size ({recommended_size(name)})") from None


def blank_forward(model: nn.Module, height: int, width: int):
    """A forward pass of two blank images in eval mode, the model's mode restored after."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, height, width))
    finally:
        model.train(training)


# ---------------------------------------------------------------- models by name: torchvision's and timm's

TIMM_PREFIX = "timm/"


def torchvision_names() -> list:
    """Every classification model of torchvision (not detection, segmentation, video)."""
    return torchvision.models.list_models(module=torchvision.models)


def timm_names(pattern: str = "*") -> list:
    import timm  # imported on demand: the table's models never need it
    return [TIMM_PREFIX + name for name in timm.list_models(pattern)]


def named_spec(name: str) -> ModelSpec:
    """The row of a model named as a user types it: a table name (e.g. ResNet32), a torchvision
    classification model (e.g. mobilenet_v3_small) or timm/NAME (e.g. timm/resnet10t)."""
    table = {spec.name: spec for spec in MODELS}
    if name in table:
        return table[name]
    if name.startswith(TIMM_PREFIX) and name in timm_names(name[len(TIMM_PREFIX):]):
        return ModelSpec(name, partial(timm_model, name[len(TIMM_PREFIX):]), None)
    if name in torchvision_names():
        options = SINGLE_OUTPUT if name in SINGLE_OUTPUT_MODELS else {}
        return ModelSpec(name, partial(torchvision_model, name, **options), torchvision_min_size(name))
    known = dict.fromkeys([*table, *torchvision_names(), *timm_names()])
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown --model {name!r}: {hint}list the names with python get_model.py --list [PATTERN] "
                    f"(torchvision's names as they are, timm's as timm/NAME)")


def timm_model(name: str, num_classes: int) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def torchvision_min_size(name: str) -> int | None:
    """The smallest size torchvision's weights record for the model (None: probed)."""
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    return max(meta["min_size"]) if "min_size" in meta else None


# ---------------------------------------------------------------- ImageNet weights, through the libraries' caches

@dataclass
class ImagenetWeights:
    """A model's ImageNet weights as its library publishes them, and where its cache keeps them."""
    name: str  # e.g. ResNet18_Weights.IMAGENET1K_V1, timm/resnet10t.c3_in1k
    url: str  # what a connected machine fetches
    folder: Path  # the library's cache folder that holds it
    mean: list  # the weights' own preprocessing, replacing the dataset's channel statistics
    std: list
    input_size: tuple  # (height, width) they were trained at: advice, not a rule
    fetch: Callable[[], dict]  # -> their state_dict (downloaded into the cache once, offline from it)


def offline() -> bool:
    """HF_HUB_OFFLINE=1: no library fetches anything, a cached file or an error."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def imagenet_weights(spec: ModelSpec) -> ImagenetWeights:
    """Where the model's ImageNet weights come from; a model without any is a UserError."""
    if spec.name.startswith(TIMM_PREFIX):
        return timm_weights(spec.name[len(TIMM_PREFIX):])
    if spec.name in torchvision_names():
        return torchvision_weights(spec.name)
    raise UserError(f"--pretrained imagenet: {spec.name} has no ImageNet weights (it is one of this toolkit's "
                    f"own networks); pick a torchvision or timm model that has them (python get_model.py --list), "
                    f"or pass --pretrained PATH")


def torchvision_weights(name: str) -> ImagenetWeights:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    preprocessing = weights.transforms()
    size = preprocessing.crop_size[0]

    def fetch() -> dict:
        if not (folder / Path(weights.url).name).is_file():
            if offline():
                raise missing_weights(weights.url, folder, "HF_HUB_OFFLINE is set", "put the file into")
            print(f"downloading {weights.url} into {folder} (once; read from there after)", flush=True)
        try:
            return weights.get_state_dict(progress=True, check_hash=True)
        except OSError as e:  # no network: urllib's URLError is an OSError
            raise missing_weights(weights.url, folder, f"{type(e).__name__}: {e}", "put the file into") from None

    mean, std = list(preprocessing.mean), list(preprocessing.std)
    if name in SINGLE_OUTPUT_MODELS:  # their weights expect transform_input's (x - 0.5) / 0.5: the same, done here
        mean, std = [0.5] * 3, [0.5] * 3
    return ImagenetWeights(f"{type(weights).__name__}.{weights.name}", weights.url, folder, mean, std, (size, size),
                           fetch)


def timm_weights(arch: str) -> ImagenetWeights:
    import timm
    from huggingface_hub import constants
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"--pretrained imagenet: timm publishes no weights for {arch}; pick a timm model that has "
                        f"them (python get_model.py --list 'timm/{arch.split('_')[0]}*' marks them), or pass "
                        f"--pretrained PATH")
    if cfg.hf_hub_id:
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        folder = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    else:
        url, folder = cfg.url, Path(torch.hub.get_dir()) / "checkpoints"

    def fetch() -> dict:
        try:
            return timm.create_model(arch, pretrained=True).state_dict()
        except OSError as e:  # huggingface_hub's LocalEntryNotFoundError (offline, no network) is one
            raise missing_weights(url, folder, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}",
                                  "copy that machine's cache folder of them to the same place here," if cfg.hf_hub_id
                                  else "put the file into") from None

    return ImagenetWeights(cfg.hf_hub_id or f"timm/{arch}.{cfg.tag}", url, folder, list(cfg.mean), list(cfg.std),
                           tuple(cfg.input_size[1:]), fetch)


def missing_weights(url: str, folder: Path, why: str, where: str) -> UserError:
    return UserError(f"--pretrained imagenet: the weights are not in the cache and cannot be fetched here ({why}); "
                     f"on a connected machine run the same command once (or download {url}), then {where} {folder}")


def recommended_size(name: str) -> str:
    try:
        height, width = imagenet_weights(named_spec(name)).input_size
        return f"{height}x{width}"
    except UserError:
        return "no pretrained size"


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
    return load_matching(model, weights, path, saved_index)


def load_matching(model: nn.Module, weights: dict, source, saved_index) -> dict:
    """Copy the tensors of `weights` that fit `model` (same name, same shape) into it; the counts."""
    own = model.state_dict()
    fitting = {name: t for name, t in weights.items() if name in own and own[name].shape == t.shape}
    if not any(t.dim() >= 2 for t in fitting.values()):  # a bias or a counter alone is chance
        raise UserError(f"{source} matches none of {type(model).__name__}'s convolution or linear weights; "
                        f"{architecture_hint(saved_index)}")
    model.load_state_dict(fitting, strict=False)
    loaded = sum(1 for name in fitting if is_weight(name))
    return {"loaded": loaded,
            "skipped": sum(1 for name in weights if is_weight(name)) - loaded,
            "initialised": sum(1 for name in own if is_weight(name)) - loaded}


def is_weight(name: str) -> bool:
    return not name.endswith("num_batches_tracked")


def read_weights(path) -> tuple:
    """The state_dict in a weights file (torch.save's or safetensors), read as tensors and plain
    values only (no code runs), and the model_index a checkpoint of this toolkit records (else None)."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, damaged or pickled with code: the same to the user
        raise UserError(f"cannot load weights {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"pass a state_dict saved with torch.save or safetensors, a timm checkpoint or a .pth "
                        f"of this toolkit") from None
    saved_index = state.get("model_index") if isinstance(state, dict) else None
    if isinstance(state, dict):
        # this toolkit's checkpoints; Lightning's and timm's training checkpoints (its EMA weights if kept)
        for key in ("model", "state_dict_ema", "state_dict"):
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
    return ("are they weights of another network? pass the --model_index or --model they were trained as "
            "(see python get_model.py --list)")


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


def last_stage_parameters(model: nn.Module, height: int, width: int) -> set:
    """The names of the parameters `--finetune last-stage` trains: the classifier and what comes
    after the backbone's last stage, and that stage. timm's models name their stages
    (group_matcher); any other network's last stage is every layer whose output has the smallest
    feature map, from the last stride on (found with one forward pass of a blank batch)."""
    classifier = classifier_layer(model)
    head = {f"{name}.{p}" for name, module in model.named_modules() if module is classifier
            for p, _ in module.named_parameters()}
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters
        groups = [set(names) for _, names in sorted(group_parameters(model, model.group_matcher(coarse=True)).items())]
        shapes = dict(model.named_parameters())
        stages = [i for i, names in enumerate(groups) if not names & head and any(shapes[n].dim() > 1 for n in names)]
        return head.union(*groups[stages[-1]:]) if stages else head
    sizes = output_sizes(model, height, width)
    maps = [size for size in sizes.values() if len(size) == 2]
    if not maps:
        raise UserError(f"--finetune last-stage finds no feature maps in {type(model).__name__} to tell its last stage "
                        f"by; use --finetune full with --backbone-lr-scale, or a timm model (timm/NAME)")
    smallest = min(maps, key=lambda size: size[0] * size[1])
    late = {name for name, size in sizes.items() if len(size) < 2 or size == smallest}
    return head | {f"{name}.{p}" if name else p for name, module in model.named_modules() if name in late
                   for p, _ in module.named_parameters(recurse=False)}


def output_sizes(model: nn.Module, height: int, width: int) -> dict:
    """name -> the spatial size of its output (an empty tuple after pooling), of every module that
    holds parameters of its own, from a forward pass of two blank images in eval mode."""
    sizes, hooks = {}, []

    def keep_size(name):
        def hook(module, inputs, output):
            sizes.setdefault(name, tuple(output.shape[2:]))
        return hook

    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            hooks.append(module.register_forward_hook(keep_size(name)))
    try:
        blank_forward(model, height, width)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def parameter_count(spec: ModelSpec, num_classes: int = 10) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        model = spec.constructor(num_classes)
    return sum(parameter.numel() for parameter in model.parameters())


def print_names(pattern: str) -> int:
    """--list: the names --model takes that match PATTERN (a shell pattern, any case), and whether
    --pretrained imagenet has weights for each."""
    import timm
    with_weights = {name.split(".")[0] for name in timm.list_models(pretrained=True)}
    names = [(spec.name, "table", "no") for spec in MODELS[35:]]
    names += [(name, "torchvision", "yes") for name in torchvision_names()]
    names += [(name, "timm", "yes" if name[len(TIMM_PREFIX):] in with_weights else "no") for name in timm_names()]
    shown = [row for row in names if fnmatch.fnmatch(row[0].lower(), pattern.lower())]
    print(f"{'name (--model)':<48} {'library':<12} imagenet weights")
    for name, library, weights in shown:
        print(f"{name:<48} {library:<12} {weights}")
    print(f"{len(shown)} of {len(names)} names match {pattern!r}")
    return 0


def print_table(argv=None) -> int:
    parser = cli.ArgumentParser(prog="get_model.py", description=(
        "Print the model table: the index to pass as --model_index, the name, the parameter count "
        "for 10 classes, and the smallest image height and width the model accepts. --list prints the "
        "names --model takes instead: torchvision's classification models and timm's (timm/NAME)."))
    parser.add_argument("--list", nargs="?", const="*", metavar="PATTERN",
                        help="list the names --model takes, those matching PATTERN (e.g. '*resnet*', 'timm/conv*')")
    args = parser.parse_args(argv)
    if args.list is not None:
        return print_names(args.list)
    print(f"{'index':>5}  {'name':<20} {'params (10 classes)':>19}  {'min size':>8}")
    for index, spec in enumerate(MODELS):
        params = parameter_count(spec)
        print(f"{index:>5}  {spec.name:<20} {params:>19,}  {spec.min_size:>8}")
    return 0


def main(argv=None) -> int:
    return cli.run_main(print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
