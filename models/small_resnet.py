"""ResNet-18/34/50/101/152 for small images (CIFAR-style).

Same stages as He et al. 2016 (64/128/256/512 channels, BasicBlock or Bottleneck), but the
stem is a single 3x3 stride-1 convolution with no max-pool, so a 32x32 image keeps its detail
until the stride-2 stages. Shortcuts that change shape are 1x1 convolutions with BatchNorm.
"""
from torch import nn

from models.weight_init import init_conv_and_batchnorm


def conv_bn(in_channels, out_channels, kernel_size, stride=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                  padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def projection_shortcut(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, kernel_size=1, stride=stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.residual = nn.Sequential(
            conv_bn(in_channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            conv_bn(channels, channels, 3),
        )
        self.shortcut = projection_shortcut(in_channels, channels, stride)

    def forward(self, x):
        return (self.residual(x) + self.shortcut(x)).relu()


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = nn.Sequential(
            conv_bn(in_channels, channels, 1),
            nn.ReLU(inplace=True),
            conv_bn(channels, channels, 3, stride),
            nn.ReLU(inplace=True),
            conv_bn(channels, out_channels, 1),
        )
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        return (self.residual(x) + self.shortcut(x)).relu()


class SmallResNet(nn.Module):
    def __init__(self, block, blocks_per_stage, num_classes):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 3), nn.ReLU(inplace=True))
        stages, in_channels = [], 64
        for stage, (channels, blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            strides = [1 if stage == 0 else 2] + [1] * (blocks - 1)
            for stride in strides:
                stages.append(block(in_channels, channels, stride))
                in_channels = channels * block.expansion
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_conv_and_batchnorm(self)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def small_resnet18(num_classes):
    return SmallResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def small_resnet34(num_classes):
    return SmallResNet(BasicBlock, (3, 4, 6, 3), num_classes)


def small_resnet50(num_classes):
    return SmallResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def small_resnet101(num_classes):
    return SmallResNet(Bottleneck, (3, 4, 23, 3), num_classes)


def small_resnet152(num_classes):
    return SmallResNet(Bottleneck, (3, 8, 36, 3), num_classes)
