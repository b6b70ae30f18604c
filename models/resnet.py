"""ResNet-34/50 (He et al., 2016), ResNeXt-50 32x4d (Xie et al., 2017), SE-ResNet-34
(Hu et al., 2018) and WRN-28-10 (Zagoruyko & Komodakis, 2016).

The torchvision ResNets get the small stem by a 3x3 stride-1 ``conv1`` and no max-pool
(32 px -> 4x4 at ``layer4``). The small ResNeXt-50 is the authors' released CIFAR one, whose
first 1x1 conv of each block is grouped too (14.6 M parameters; the ImageNet stem keeps
torchvision's dense one, 23.0 M). WRN-28-10 is the CIFAR design; its ImageNet stem adds a
strided 7x7 conv + max-pool in front of the three groups.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import ResNet, resnet34 as tv_resnet34, resnet50 as tv_resnet50
from torchvision.models import resnext50_32x4d
from torchvision.models.resnet import BasicBlock, Bottleneck

from models._common import disable_inplace, init_convs_, stem_conv
from models.registry import register_model


def _adapt_stem(model: ResNet, in_channels: int, stem: str) -> nn.Module:
    model.conv1 = stem_conv(model.conv1, in_channels, stem)
    if stem == "small":
        model.maxpool = nn.Identity()
    return disable_inplace(model)


@register_model
def resnet34(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    return _adapt_stem(tv_resnet34(num_classes=num_classes), in_channels, stem)


@register_model
def resnet50(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    return _adapt_stem(tv_resnet50(num_classes=num_classes), in_channels, stem)


class GroupedBottleneck(Bottleneck):
    """torchvision's ``Bottleneck`` whose first 1x1 conv is grouped like the 3x3 one."""

    def __init__(self, inplanes: int, planes: int, *args, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.conv1 = nn.Conv2d(inplanes, self.conv1.out_channels, 1,
                               groups=self.conv2.groups, bias=False)


@register_model
def resnext50(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        model = ResNet(GroupedBottleneck, [3, 4, 6, 3], num_classes=num_classes,
                       groups=32, width_per_group=4)
    else:
        model = resnext50_32x4d(num_classes=num_classes)
    return _adapt_stem(model, in_channels, stem)


# --- SE-ResNet-34 -----------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with fully connected layers, as in the SENet paper.

    ``nn.Linear`` rather than ``torchvision.ops.SqueezeExcitation`` (1x1 convs): the gates
    would otherwise be the last ``Conv2d`` of every block and of the model, which is where
    :func:`models.load_modules` looks for the feature maps to diagnose.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(channels // reduction, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.relu(self.fc1(x.mean((2, 3))))))
        return x * scale[:, :, None, None]


class SEBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` with SE on the residual branch before the addition."""

    def __init__(self, inplanes: int, planes: int, *args, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = SqueezeExcite(planes * self.expansion, reduction=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


@register_model
def senet34(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = ResNet(SEBasicBlock, [3, 4, 6, 3], num_classes=num_classes)
    return _adapt_stem(model, in_channels, stem)


# --- WRN-28-10 --------------------------------------------------------------------------

class WideBasic(nn.Module):
    """Pre-activation wide basic block: (BN-ReLU-conv3x3) x 2 + shortcut.

    When the shape changes, the 1x1 projection reads the pre-activated input, as in the
    authors' code.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        # Not ``out += ...``: ``out`` is a conv output that hooks may hold.
        return out + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: a 16-channel stem conv, three groups of ``(depth - 4) / 6``
    wide blocks (16k, 32k, 64k channels; strides 1, 2, 2), BN-ReLU, global pool, linear."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int,
                 stem: str) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        if stem == "small":
            self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        else:  # pre-activation ResNet's ImageNet stem, at WRN's 16 channels
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 16, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, in_planes = [], 16
        for width, stride in zip(widths, (1, 2, 2)):
            group = [WideBasic(in_planes if j == 0 else width, width, stride if j == 0 else 1)
                     for j in range(n)]
            blocks.append(nn.Sequential(*group))
            in_planes = width
        self.group1, self.group2, self.group3 = blocks
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

        init_convs_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group3(self.group2(self.group1(self.stem(x))))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


@register_model
def wideresnet28(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    return WideResNet(28, 10, num_classes, in_channels, stem)
