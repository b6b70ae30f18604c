"""DenseNet-121 (Huang et al., 2017): growth rate 32, dense blocks of 6/12/24/16 layers.

torchvision's model; the small stem uses a 3x3 stride-1 ``conv0`` and no ``pool0``
(32 px -> 4x4 in the last dense block), as in the CIFAR versions of DenseNet-121.
"""
import torch.nn as nn
from torchvision.models import densenet121 as tv_densenet121

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def densenet121(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = tv_densenet121(num_classes=num_classes)
    model.features.conv0 = stem_conv(model.features.conv0, in_channels, stem)
    if stem == "small":
        model.features.pool0 = nn.Identity()
    return disable_inplace(model)
