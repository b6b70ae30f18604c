"""EfficientNetV2-S (Tan & Le, 2021).

``stem="small"``: the authors' released definition, used at 32 px as it is (stride-2 stem,
overall stride 32: layer 0 is the 1792x1x1 head conv, 20.3 M parameters). Fused-MBConv
stages (a 3x3 expansion conv, then a 1x1 projection) keep both convs at expansion 1, the
MBConv stages put squeeze-excitation with linear layers between the depthwise and the
projection conv, so every ``Conv2d`` is a feature conv (112 of them).

``stem="imagenet"``: torchvision's block configuration (1280-channel head, SE gates as 1x1
convs that appear in :func:`models.load_modules`; index 0 is still the head conv).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
from torchvision.ops.misc import Conv2dNormActivation

from models._blocks import InvertedResidual
from models._common import disable_inplace, init_convs_, stem_conv
from models.registry import register_model

# expand ratio, out channels, blocks, stride of the first block, fused (else MBConv + SE)
_CIFAR_SETTING = [(1, 24, 2, 1, True), (4, 48, 4, 2, True), (4, 64, 4, 2, True),
                  (4, 128, 6, 2, False), (6, 160, 9, 1, False), (6, 256, 15, 2, False)]


class LinearSqueezeExcite(nn.Module):
    """Channel gates from the pooled map through two linear layers (SiLU, sigmoid)."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze_channels)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(squeeze_channels, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3))))))
        return x * scale[:, :, None, None]


class FusedMBConv(nn.Module):
    """3x3 expansion conv (``stride``) -> 1x1 linear projection, plus the input when the
    shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.block = nn.Sequential(
            Conv2dNormActivation(in_channels, hidden, 3, stride, activation_layer=nn.SiLU,
                                 inplace=False),
            Conv2dNormActivation(hidden, out_channels, 1, activation_layer=None))
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class CifarEfficientNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv2dNormActivation(
            in_channels, 24, 3, 2, activation_layer=nn.SiLU, inplace=False)]
        channels = 24
        for expand, width, blocks, stride, fused in _CIFAR_SETTING:
            for j in range(blocks):
                s = stride if j == 0 else 1
                if fused:
                    layers.append(FusedMBConv(channels, width, s, expand))
                else:
                    # the gate width follows the block's input (all multiples of 32 here)
                    se = partial(LinearSqueezeExcite, squeeze_channels=channels // 4)
                    layers.append(InvertedResidual(channels, width, s, expand,
                                                   activation=nn.SiLU, se_layer=se))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = Conv2dNormActivation(channels, 1792, 1, activation_layer=nn.SiLU,
                                         inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1792, num_classes)
        init_convs_(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # the released initialisation
                nn.init.normal_(m.weight, 0, 0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.head(self.features(x)))
        return self.classifier(torch.flatten(x, 1))


@register_model
def efficientnetv2s(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        return disable_inplace(CifarEfficientNetV2(num_classes, in_channels))
    # expand ratio, kernel, stride, in channels, out channels, layers (Table 4 of the paper)
    setting = [
        FusedMBConvConfig(1, 3, 1, 24, 24, 2),
        FusedMBConvConfig(4, 3, 2, 24, 48, 4),
        FusedMBConvConfig(4, 3, 2, 48, 64, 4),
        MBConvConfig(4, 3, 2, 64, 128, 6),
        MBConvConfig(6, 3, 1, 128, 160, 9),
        MBConvConfig(6, 3, 2, 160, 256, 15),
    ]
    model = EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2,
                         num_classes=num_classes, last_channel=1280,
                         norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    model.features[0][0] = stem_conv(model.features[0][0], in_channels, stem)
    return disable_inplace(model)
