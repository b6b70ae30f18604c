"""ShuffleNetV2 1.0x (Ma et al., 2018), torchvision's model.

The small stem uses a stride-1 first conv and no max-pool (overall stride 8: 32 px -> 4x4).
"""
import torch.nn as nn
from torchvision.models import shufflenet_v2_x1_0

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def shufflenetv2(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = shufflenet_v2_x1_0(num_classes=num_classes)
    model.conv1[0] = stem_conv(model.conv1[0], in_channels, stem)
    if stem == "small":
        model.maxpool = nn.Identity()
    return disable_inplace(model)
