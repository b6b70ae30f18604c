"""SimpleNet-v1 (Hasanpour et al., 2016, "Lets keep it simple"), the 5.48M CIFAR model.

13 convs (widths 64, 128, 128, 128, 128, 128, 256, 256, 256, 512, 2048, 256, 256; the
2048/256 pair is 1x1), each followed by BN (momentum 0.05, as in the authors' PyTorch port)
and ReLU; 2x2 max-pools after convs 4, 7, 9, 10 and 12; global max pool; one linear layer.
The pools use ``ceil_mode`` like the original Caffe model, which also lets 28 px inputs
through all five (32 px -> 1x1). The ImageNet stem makes the first conv stride 2.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models._common import init_convs_
from models.registry import register_model

# (out channels, kernel size) per conv; "M" = 2x2 max-pool followed by Dropout2d(0.1).
_CFG = [(64, 3), (128, 3), (128, 3), (128, 3), "M", (128, 3), (128, 3), (256, 3), "M",
        (256, 3), (256, 3), "M", (512, 3), "M", (2048, 1), (256, 1), "M", (256, 3)]


class SimpleNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stem: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _CFG:
            if item == "M":
                layers += [nn.MaxPool2d(2, stride=2, ceil_mode=True), nn.Dropout2d(0.1)]
                continue
            width, kernel = item
            stride = 2 if stem == "imagenet" and not layers else 1
            layers += [nn.Conv2d(channels, width, kernel, stride=stride, padding=kernel // 2),
                       nn.BatchNorm2d(width, momentum=0.05), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(channels, num_classes)
        init_convs_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


@register_model
def simplenetv1(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    return SimpleNet(num_classes, in_channels, stem)
