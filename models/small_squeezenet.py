"""SqueezeNet 1.1 (Iandola et al. 2016) for small images.

The same fire modules and conv classifier as torchvision's squeezenet1_1, but the stem is a
3x3 stride-1 convolution and there are two max-pools instead of three, so a 32x32 image
reaches the classifier at 8x8 rather than 1x1.
"""
import torch
from torch import nn

from models.weight_init import init_conv_and_batchnorm


class Fire(nn.Module):
    """Squeeze with 1x1 convolutions, then expand with 1x1 and 3x3 convolutions side by side."""

    def __init__(self, in_channels, squeeze, expand1x1, expand3x3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU(inplace=True))
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand3x3, 3, padding=1),
                                       nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], dim=1)


def max_pool():
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class SmallSqueezeNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=1, padding=1), nn.ReLU(inplace=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), max_pool(),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), max_pool(),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
        )
        classifier_conv = nn.Conv2d(512, num_classes, 1)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), classifier_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
        )
        # No BatchNorm here, so fan-in keeps the activations' scale steady from layer to layer.
        init_conv_and_batchnorm(self, mode="fan_in")
        # As in SqueezeNet: a small classifier init, so the ReLU'd logits start near zero.
        nn.init.normal_(classifier_conv.weight, std=0.01)

    def forward(self, x):
        return self.classifier(self.features(x)).flatten(1)
