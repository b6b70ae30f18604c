"""Inception-v3 (Szegedy et al., 2016), torchvision's model without the auxiliary head.

The ImageNet stem needs at least 75 px. The small stem makes ``Conv2d_1a_3x3`` stride 1
(padding 1) and drops the two stem max-pools, so 28 and 32 px inputs reach ``Mixed_7c``
at 5x5 and 6x6.
"""
import torch.nn as nn
from torchvision.models import Inception3

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def inceptionv3(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False,
                       init_weights=True)
    model.Conv2d_1a_3x3.conv = stem_conv(model.Conv2d_1a_3x3.conv, in_channels, stem)
    if stem == "small":
        model.maxpool1 = nn.Identity()
        model.maxpool2 = nn.Identity()
    return disable_inplace(model)
