"""MnasNet 1.0 (Tan et al., 2019).

``stem="small"``: the authors' released definition, used at 32 px as it is (3x3 stride-2
stem, overall stride 32: layer 0 is the 1280x1x1 head conv) — the B1 layout of torchvision's
``mnasnet1_0`` with ReLU6, BN momentum 0.1 and dropout 0.5 before the linear classifier.

``stem="imagenet"``: torchvision's ``mnasnet1_0`` (ReLU, BN momentum 0.0003, dropout 0.2).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import mnasnet1_0
from torchvision.ops.misc import Conv2dNormActivation

from models._blocks import InvertedResidual
from models._common import disable_inplace, init_convs_, stem_conv
from models.registry import register_model

# t (expansion), c (channels), n (repeats), s (stride of the first block), k (kernel)
_CIFAR_SETTING = [(3, 24, 3, 2, 3), (3, 40, 3, 2, 5), (6, 80, 3, 2, 5), (6, 96, 2, 1, 3),
                  (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]


class CifarMnasNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        act = dict(activation_layer=nn.ReLU6, inplace=False)
        layers: list[nn.Module] = [
            Conv2dNormActivation(in_channels, 32, 3, 2, **act),
            Conv2dNormActivation(32, 32, 3, groups=32, **act),       # separable conv:
            Conv2dNormActivation(32, 16, 1, activation_layer=None),  # depthwise, pointwise
        ]
        channels = 16
        for t, c, n, s, k in _CIFAR_SETTING:
            for j in range(n):
                layers.append(InvertedResidual(channels, c, s if j == 0 else 1, t, k))
                channels = c
        layers.append(Conv2dNormActivation(channels, 1280, 1, **act))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(1280, num_classes))
        init_convs_(self)
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)  # the released initialisation
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model
def mnasnet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        return disable_inplace(CifarMnasNet(num_classes, in_channels))
    model = mnasnet1_0(num_classes=num_classes)
    model.layers[0] = stem_conv(model.layers[0], in_channels, stem)
    return disable_inplace(model)
