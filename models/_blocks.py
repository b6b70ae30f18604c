"""Blocks of the released CIFAR definitions that torchvision has no exact match for."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torchvision.ops.misc import Conv2dNormActivation


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise ``kernel_size`` (``stride``) -> [SE] -> project 1x1, each
    conv followed by BN, the projection linear; plus the input when the shape is kept.

    Used by the CIFAR MobileNetV2, MnasNet and EfficientNetV2 (MBConv). Unlike torchvision's
    ``InvertedResidual``/``MBConv`` the expansion conv is kept at ratio 1, the kernel is
    free and the convs may carry a bias, as in those released definitions.

    Args:
        se_layer: ``se_layer(hidden_channels)`` builds the squeeze-excitation placed
            between the depthwise and the projection conv; ``None`` for none.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 kernel_size: int = 3, activation: Callable[..., nn.Module] = nn.ReLU6,
                 bias: bool = False,
                 se_layer: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        act = dict(activation_layer=activation, inplace=False, bias=bias)
        layers = [Conv2dNormActivation(in_channels, hidden, 1, **act),
                  Conv2dNormActivation(hidden, hidden, kernel_size, stride, groups=hidden, **act)]
        if se_layer is not None:
            layers.append(se_layer(hidden))
        layers.append(Conv2dNormActivation(hidden, out_channels, 1, activation_layer=None,
                                           bias=bias))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out
