"""Xception (Chollet, 2017): entry flow, middle flow of 8 blocks, exit flow.

Follows the paper's Figure 5 (and the widely used Cadene/timm port): separable convs are a
depthwise 3x3 then a pointwise 1x1, each followed by BN; residual blocks add a strided 1x1
projection when the shape changes. The ImageNet stem is the paper's (3x3 stride-2 conv,
3x3 conv, both unpadded). The small stem is the authors' released CIFAR Xception: both stem
convs stride 1 with padding 1, and the entry flow's last block keeps the resolution (its
3x3 max-pool has stride 1), so 32 px inputs reach the middle flow at 8x8 and layer 0 (the
exit flow's last pointwise conv) at 4x4.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models._common import init_convs_
from models.registry import register_model


class SeparableConv2d(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)


class Block(nn.Module):
    """``reps`` x (ReLU, SeparableConv, BN), a 3x3 max-pool, plus a shortcut.

    ``grow_first`` changes the width in the first separable conv, otherwise in the last
    one; the first block of the entry flow starts without the ReLU. The max-pool is there
    when strided, or with ``pool=True`` at stride 1.
    """

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int = 1,
                 start_with_relu: bool = True, grow_first: bool = True,
                 pool: bool = False) -> None:
        super().__init__()
        self.skip = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        if grow_first:
            widths = [in_channels] + [out_channels] * reps
        else:
            widths = [in_channels] * reps + [out_channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ReLU(), SeparableConv2d(c_in, c_out), nn.BatchNorm2d(c_out)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1 or pool:
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


class Xception(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stem: str) -> None:
        super().__init__()
        small = stem == "small"
        stride, padding = (1, 1) if small else (2, 0)
        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=padding, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            Block(64, 128, 2, stride=2, start_with_relu=False),
            Block(128, 256, 2, stride=2),
            Block(256, 728, 2, stride=1 if small else 2, pool=True),
        )
        self.middle = nn.Sequential(*[Block(728, 728, 3) for _ in range(8)])
        self.exit = nn.Sequential(
            Block(728, 1024, 2, stride=2, grow_first=False),
            SeparableConv2d(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(),
            SeparableConv2d(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        init_convs_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.exit(self.middle(self.entry(x))))
        return self.fc(torch.flatten(x, 1))


@register_model
def xception(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    return Xception(num_classes, in_channels, stem)
