"""VGG-16 with batch norm (Simonyan & Zisserman, 2015; configuration D), from torchvision.

13 convs + the 3-layer classifier behind ``AdaptiveAvgPool2d((7, 7))``. VGG's first conv
is already 3x3 stride 1; the small stem drops the first max-pool so 28 px inputs survive
the remaining four (32 px -> 2x2 before pooling).
"""
import torch.nn as nn
from torchvision.models import vgg16_bn

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def vgg16(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = vgg16_bn(num_classes=num_classes)
    model.features[0] = stem_conv(model.features[0], in_channels, stem)
    if stem == "small":
        model.features[6] = nn.Identity()  # first max-pool
    return disable_inplace(model)
