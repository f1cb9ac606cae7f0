"""ResNet-20/32/56 for 32x32 images (He et al. 2016, section 4.2), as in the LDAM-DRW code.

A 3x3 convolution with 16 channels, then 3 stages of n BasicBlocks with 16/32/64 channels
(n = 3, 5, 9 gives 6n+2 = 20, 32, 56 layers), global average pool, Linear. When a block halves
the resolution and doubles the channels, its shortcut is "option A": subsample and pad the new
channels with zeros, which adds no parameters (that is what keeps ResNet-20 at 0.27M).
"""
import torch.nn.functional as F
from torch import nn

from models.weight_init import init_conv_and_batchnorm


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every other pixel, pad the channel dimension with zeros."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.extra_channels = out_channels - in_channels

    def forward(self, x):
        before = self.extra_channels // 2
        after = self.extra_channels - before
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, before, after))


class BasicBlock(nn.Module):
    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride == 1 and in_channels == channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = ZeroPadShortcut(in_channels, channels)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_channels = [], 16
        for stage, channels in enumerate((16, 32, 64)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        init_conv_and_batchnorm(self)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.blocks(x)
        return self.fc(self.pool(x).flatten(1))


def resnet20(num_classes):
    return CifarResNet(3, num_classes)


def resnet32(num_classes):
    return CifarResNet(5, num_classes)


def resnet56(num_classes):
    return CifarResNet(9, num_classes)
