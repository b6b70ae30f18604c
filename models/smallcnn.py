"""A five-conv VGG-style network for the offline quickstart and fast tests.

Not one of the paper's classifiers: the paper's 16 architectures take minutes per epoch on
a 2-core CPU, this one takes seconds, so the whole pipeline can run on a laptop.
"""
import torch.nn as nn
from torchvision.ops.misc import Conv2dNormActivation

from models._common import disable_inplace, init_convs_
from models.registry import register_model


@register_model
def smallcnn(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    stride = 1 if stem == "small" else 4      # 224 px inputs: shrink early, keep the cost low
    block = lambda i, o, s=1: Conv2dNormActivation(i, o, 3, s)  # noqa: E731
    model = nn.Sequential(
        block(in_channels, 16, stride), block(16, 32), nn.MaxPool2d(2),
        block(32, 32), block(32, 64), nn.MaxPool2d(2),
        block(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )
    return disable_inplace(init_convs_(model))
