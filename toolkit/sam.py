"""Sharpness-aware minimisation (SAM; Foret et al., "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021), the two-pass step around any optimiser and objective.

For long-tailed data, Rangwani et al. ("Escaping Saddle Points for Effective Generalization on
Class-Imbalanced Data", NeurIPS 2022) apply it to a DRW objective: CE + DRW + SAM.

One SAM step on a loss L at weights w, after the reference code:
  1. g = grad L(w); e = rho g / (||g||_2 + 1e-12), the norm over every parameter that has a
     gradient, taken together (davda54/sam `sam.py`:16-25, `_grad_norm` :49-59);
  2. w <- w + e, and g' = grad L(w + e) on the same batch (`sam.py`:45-46);
  3. w <- the saved w (not w + e - e: bit-exact), and the base optimiser steps with g' (its weight
     decay and momentum at w, as the base optimiser always does) (`sam.py`:29-36).
Saddle-LongTail does exactly this in its training loop (val-iisc/Saddle-LongTail
`cifar_train_sam.py`:301-310, the same `sam.py`). BatchNorm's running statistics are updated by
the first pass only (momentum 0 in the second), as the SAM port's example does
(davda54/sam `example/utility/bypass_bn.py`:6-19, used in `example/train.py`:51-60): the second
pass is at perturbed weights, and its statistics would be counted twice a batch.

The direction g / ||g|| does not change when the loss is scaled, so under fp16's GradScaler the
scaled gradients give the same e; a non-finite norm (an overflowing scaled gradient) gives no
perturbation, and the scaler then skips the step as it would without SAM. Under torchrun the
first pass's gradients are averaged over the processes like the second's, so every process
perturbs by the same e and the weights stay equal. The perturbation lives only inside one step,
so SAM has no state of its own: a resumed run repeats exactly.
"""
import contextlib

import torch

EPSILON = 1e-12  # sam.py:18, so that a zero gradient gives no perturbation rather than 0 / 0
USUAL_RHO = 0.05  # Foret et al.'s default, and davda54/sam's (sam.py:5)


def trainable(optimizer) -> list:
    """The optimiser's parameters that received a gradient."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


@torch.no_grad()
def ascend(optimizer, rho: float) -> list:
    """Move the optimiser's parameters to w + rho g / ||g|| (g their current gradients); returns
    (parameter, saved weights) pairs for `descend`. No host sync: the norm stays on the device."""
    params = trainable(optimizer)
    saved = [(p, p.detach().clone()) for p in params]
    if not params:
        return saved
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
    scale = torch.where(torch.isfinite(norm), rho / (norm + EPSILON), torch.zeros_like(norm))
    for p in params:
        p.add_(p.grad * scale.to(p.dtype))
    return saved


@torch.no_grad()
def descend(saved: list) -> None:
    """Put back the weights `ascend` saved (their gradients, taken at w + e, are kept)."""
    for p, weights in saved:
        p.copy_(weights)


@contextlib.contextmanager
def batchnorm_statistics_kept(model: torch.nn.Module):
    """BatchNorm layers keep their running statistics inside (momentum 0), then as they were."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
