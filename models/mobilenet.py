"""MobileNetV2 1.0 (Sandler et al., 2018), torchvision's model.

The small stem follows the usual CIFAR adaptation: stride-1 first conv and stride 1 in the
second stage (t=6, c=24), so the overall stride is 8 (32 px -> 4x4).
"""
import torch.nn as nn
from torchvision.models import MobileNetV2

from models._common import disable_inplace, stem_conv
from models.registry import register_model

# t (expansion), c (channels), n (repeats), s (stride of the first block); Table 2 of the paper
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
            [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


@register_model
def mobilenetv2(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    setting = [list(row) for row in _SETTING]
    if stem == "small":
        setting[1][3] = 1
    model = MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting)
    model.features[0][0] = stem_conv(model.features[0][0], in_channels, stem)
    return disable_inplace(model)
