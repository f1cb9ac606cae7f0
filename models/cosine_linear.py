"""A cosine classifier: the "NormedLinear" of LDAM-DRW (Cao et al., NeurIPS 2019)."""
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.cli import UserError


class CosineLinear(nn.Module):
    """output = scale * cos(feature, weight row): logits bounded by +-scale, no bias.

    LDAM's margins are subtracted from these logits, so they only mean something when every
    class's logit lives on the same bounded scale.
    """

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        # Unit-norm rows, as the reference code's uniform + renorm: the rows' length does not
        # change the output, but it sets the size of the gradients.
        weight = torch.empty(out_features, in_features).uniform_(-1, 1)
        self.weight = nn.Parameter(F.normalize(weight, dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}")


def use_cosine_classifier(model: nn.Module, scale: float) -> nn.Module:
    """Replace the model's last nn.Linear (its classifier) by a CosineLinear, in place."""
    if not scale > 0:
        raise UserError(f"the cosine classifier's scale must be positive, got {scale}")
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier to make a cosine "
                        f"classifier of; pick a model with a linear classifier (e.g. a ResNet)")
    parent_name, _, child_name = linears[-1].rpartition(".")
    parent = model.get_submodule(parent_name)
    linear = getattr(parent, child_name)
    cosine = CosineLinear(linear.in_features, linear.out_features, scale)
    setattr(parent, child_name, cosine.to(linear.weight.device, linear.weight.dtype))
    return model
