"""Our own architectures for small images; get_model.py numbers them with torchvision's."""
from models.cifar_resnet import CifarResNet, resnet20, resnet32, resnet56
from models.cosine_linear import CosineLinear, use_cosine_classifier
from models.small_resnet import (
                                 SmallResNet,
                                 small_resnet18,
                                 small_resnet34,
                                 small_resnet50,
                                 small_resnet101,
                                 small_resnet152,
)
from models.small_squeezenet import SmallSqueezeNet

__all__ = [
    "CifarResNet", "resnet20", "resnet32", "resnet56",
    "CosineLinear", "use_cosine_classifier",
    "SmallResNet", "small_resnet18", "small_resnet34", "small_resnet50", "small_resnet101",
    "small_resnet152",
    "SmallSqueezeNet",
]
