"""The initialisation shared by our own architectures."""
from torch import nn


def init_conv_and_batchnorm(model: nn.Module, mode: str = "fan_out") -> nn.Module:
    """Kaiming-normal convolutions (for the ReLUs after them), zero conv biases;
    BatchNorm weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model
