"""A four-conv network for the offline quickstart and fast tests.

Not one of the paper's classifiers: the paper's architectures take minutes per epoch on a
2-core CPU, this one seconds, so the whole pipeline runs on a laptop. Unlike the paper
models' small stem it downsamples in its first conv (the quickstart's 32 px digits are
upscaled 8 px scans, so nothing is lost); the ImageNet stem downsamples 8x for 224 px.
"""
import torch.nn as nn
from torchvision.ops.misc import Conv2dNormActivation

from models._common import disable_inplace, init_convs_
from models.registry import register_model


@register_model
def smallcnn(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    stride = 2 if stem == "small" else 8
    block = lambda i, o, s=1: Conv2dNormActivation(i, o, 3, s)  # noqa: E731
    model = nn.Sequential(
        block(in_channels, 32, stride), block(32, 64), nn.MaxPool2d(2),
        block(64, 128), block(128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )
    return disable_inplace(init_convs_(model))
