"""MobileNetV2 1.0 (Sandler et al., 2018).

``stem="small"``: the authors' released CIFAR MobileNetV2 — a 1x1 first conv with padding 1
(32 px -> 34x34), expansion convs also at t=1, stride 1 in the 160-channel stage (34 -> 17 ->
9 -> 5), convs with bias, and a 1x1 conv as the classifier after global pooling: the last
``Conv2d`` (layer 0) is that classifier, ``num_classes`` x 1 x 1.

``stem="imagenet"``: torchvision's model (3x3 stride-2 first conv, linear classifier).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import MobileNetV2
from torchvision.ops.misc import Conv2dNormActivation

from models._blocks import InvertedResidual
from models._common import disable_inplace, stem_conv
from models.registry import register_model

# t (expansion), c (channels), n (repeats), s (stride of the first block); Table 2 of the paper
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
            [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
_CIFAR_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                  [6, 96, 3, 1], [6, 160, 3, 1], [6, 320, 1, 1]]


class CifarMobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        conv = dict(activation_layer=nn.ReLU6, inplace=False, bias=True)
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, 32, 1, padding=1, **conv)]
        channels = 32
        for t, c, n, s in _CIFAR_SETTING:
            for j in range(n):
                layers.append(InvertedResidual(channels, c, s if j == 0 else 1, t, bias=True))
                channels = c
        layers.append(Conv2dNormActivation(channels, 1280, 1, **conv))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(1280, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.avgpool(self.features(x))), 1)


@register_model
def mobilenetv2(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        return disable_inplace(CifarMobileNetV2(num_classes, in_channels))
    model = MobileNetV2(num_classes=num_classes, inverted_residual_setting=_SETTING)
    model.features[0][0] = stem_conv(model.features[0][0], in_channels, stem)
    return disable_inplace(model)
