"""How much of a pretrained network trains (--finetune, --backbone-lr-scale), and for `linear` the
frozen backbone's features of every image, computed once and cached beside the dataset.

`linear` is the linear probe of the long-tail literature (LIFT, ICML 2024: heavy fine-tuning hurts
the tail): the backbone runs once per image in eval mode, unaugmented, and each epoch trains the
classifier alone on those features, so an epoch costs a pass of one layer over N vectors. The
classifier stays the model's own layer, so a checkpoint holds the whole network and 2_test.py,
5_predict.py and the export use it as any other run's.
"""
import hashlib
import time
from dataclasses import dataclass

import torch

import get_model
from toolkit import data
from toolkit.cli import UserError, progress_bar
from toolkit.files import save_tensors

MODES = ("full", "last-stage", "linear")
FEATURES_VERSION = 1  # bump when features are computed otherwise, so old caches are rebuilt


def check_plan(args, given: set):
    """Combinations that would do nothing or contradict --finetune: refused before anything is read.
    `linear` trains on unaugmented features, so its training cache is the plain images (--augment none)."""
    if args.resume:
        return
    if args.finetune != "full" and args.pretrained is None:
        raise UserError(f"--finetune {args.finetune} trains part of a pretrained network; add --pretrained imagenet "
                        f"(or PATH): a random backbone's features are noise")
    if args.finetune != "full" and args.freeze_backbone:
        raise UserError(f"--freeze-backbone trains the classifier on augmented images, --finetune {args.finetune} "
                        f"chooses what trains itself; give one of them")
    if args.finetune != "linear":
        return
    explicit = [flag for dest, flag in (("augment", "--augment"), ("mixup", "--mixup"), ("cutmix", "--cutmix"))
                if dest in given and (dest != "augment" or args.augment != "none")]
    if explicit:
        raise UserError(f"--finetune linear computes each image's features once, unaugmented: {' and '.join(explicit)} "
                        f"would never apply; drop {'them' if len(explicit) > 1 else 'it'}, or use --finetune "
                        f"last-stage")
    if "backbone_lr_scale" in given:
        raise UserError("--backbone-lr-scale sets the backbone's learning rate, and --finetune linear trains no "
                        "backbone; drop it, or use --finetune last-stage or full")
    args.augment = "none"


# ---------------------------------------------------------------- what trains, at what rate

def freeze(model: torch.nn.Module, mode: str, height: int, width: int):
    """requires_grad off for every parameter the mode does not train."""
    if mode == "full":
        return
    if mode == "last-stage":
        kept = get_model.last_stage_parameters(model, height, width)
    else:
        kept = {name for name, p in model.named_parameters()
                if any(p is q for q in get_model.classifier_layer(model).parameters())}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in kept)


def parameter_groups(model: torch.nn.Module, lr: float, backbone_lr_scale: float) -> list:
    """The optimiser's groups: the classifier at `lr` first (its rate is the one logged), every
    other trainable parameter at backbone_lr_scale * lr. At scale 1, one group in the model's order,
    as before the option existed: the same steps, and older runs' optimiser states resume."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if backbone_lr_scale == 1:
        return [{"params": trainable, "initial_lr": lr}]
    head = {id(p) for p in get_model.classifier_layer(model).parameters()}
    groups = [{"params": [p for p in trainable if id(p) in head], "initial_lr": lr},
              {"params": [p for p in trainable if id(p) not in head], "initial_lr": lr * backbone_lr_scale}]
    return [group for group in groups if group["params"]]


def counts_line(model: torch.nn.Module, mode: str) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"--finetune {mode}: {trainable:,} of {total:,} parameters train"


# ---------------------------------------------------------------- linear: features computed once

@dataclass
class FeatureBatches:
    """Batches of the backbone's cached features (N, D) and their labels, on the device: what the
    engine trains and validates the classifier on with --finetune linear, in data.Batches' place."""
    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self):
        return len(self.labels)

    def __call__(self, order: torch.Tensor, batch_size: int, generator=None):
        for chunk in order.to(self.features.device).split(batch_size):
            yield self.features[chunk], self.labels[chunk]


def feature_batches(model, batches: data.Batches, model_name: str, batch_size: int, progress=True) -> FeatureBatches:
    """The image set's features (the input of the model's classifier), from the cache beside the
    dataset when it is current (same images, size, normalisation, model and backbone weights),
    else computed and cached; a subset's (the simulation's rounds) are computed, never cached."""
    image_set = batches.image_set
    if image_set.subset:
        features = compute_features(model, batches, batch_size, progress)
    else:
        split = image_set.split
        key = features_key(model, batches, model_name)
        path = data.cache_dir(split) / f"features-{split.name}-{'x'.join(map(str, image_set.size))}-{key[:16]}.pt"
        features = read_cached(path, key)
        if features is None:
            started = time.monotonic()
            features = compute_features(model, batches, batch_size, progress)
            data.try_write(path, lambda target: save_tensors(target, {"fingerprint": key, "features": features}))
            if progress:
                print(f"--finetune linear: features of the {len(features)} {split.name} images computed in "
                      f"{time.monotonic() - started:.1f}s, cached in {path}")
    device = image_set.labels.device
    return FeatureBatches(features.to(device), image_set.labels, batches.num_classes)


def read_cached(path, key: str):
    if not path.exists():
        return None
    try:
        stored = torch.load(path, weights_only=True)
        return stored["features"] if stored.get("fingerprint") == key else None
    except Exception:  # an unreadable cache is rebuilt, never trusted
        return None


def features_key(model, batches: data.Batches, model_name: str) -> str:
    """Changes with the images (data.fingerprint), their size, the normalisation, the model's name
    and every backbone tensor's value."""
    image_set, head = batches.image_set, get_model.classifier_layer(model)
    head_tensors = {id(t) for t in [*head.parameters(), *head.buffers()]}
    digest = hashlib.sha1(f"features v{FEATURES_VERSION} {model_name}".encode())
    digest.update(data.fingerprint(image_set.split, *image_set.size).encode())
    digest.update(repr((batches.normalise.mean.flatten().tolist(), batches.normalise.std.flatten().tolist())).encode())
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in head_tensors:
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def compute_features(model, batches: data.Batches, batch_size: int, progress=True) -> torch.Tensor:
    """float32 features (N, D) on the CPU: the classifier layer's input, the model in eval mode.
    The first batch checks that the classifier's output is the model's: a network with layers after
    its classifier (SqueezeNet's pooling) cannot train on cached features."""
    head = get_model.classifier_layer(model)
    captured = []

    def keep_input(module, inputs, output):
        captured.append(inputs[0])

    handle = head.register_forward_hook(keep_input)
    training = model.training
    model.eval()
    outputs = []
    try:
        steps = -(-len(batches) // batch_size)
        for x, _ in progress_bar(batches(torch.arange(len(batches)), batch_size), progress, total=steps,
                                 desc="features", unit="batch"):
            logits = model(x)
            if not outputs:
                check_last_layer(model, head, captured[-1], logits)
            outputs.append(captured.pop().float().flatten(1).cpu())
    finally:
        handle.remove()
        model.train(training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


def check_last_layer(model, head, features, logits):
    if features.dim() != 2 or not torch.allclose(head(features).float(), logits.float(), atol=1e-4, rtol=1e-3):
        raise UserError(f"--finetune linear trains the classifier on cached features, and {type(model).__name__}'s "
                        f"classifier layer is not its last (layers after it reshape or pool its output); use "
                        f"--finetune last-stage, or a model whose classifier is a final linear layer")
