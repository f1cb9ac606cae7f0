"""Our own architectures for small images; get_model.py numbers them with torchvision's."""
from models.cifar_resnet import CifarResNet, resnet20, resnet32, resnet56
from models.cosine_linear import CosineLinear
from models.small_map_conv import SmallMapConv2d, use_small_map_convolutions
from models.small_resnet import (SmallResNet, small_resnet18, small_resnet34, small_resnet50,
                                 small_resnet101, small_resnet152)
from models.small_squeezenet import SmallSqueezeNet

__all__ = [
    "CifarResNet", "resnet20", "resnet32", "resnet56",
    "CosineLinear",
    "SmallResNet", "small_resnet18", "small_resnet34", "small_resnet50", "small_resnet101",
    "small_resnet152",
    "SmallSqueezeNet",
    "SmallMapConv2d", "use_small_map_convolutions",
]
