"""MnasNet-B1 1.0 (Tan et al., 2019), torchvision's model.

The small stem uses a stride-1 first conv and stride 1 in the first inverted-residual stack
(overall stride 8: 32 px -> 4x4).
"""
import torch.nn as nn
from torchvision.models import mnasnet1_0
from torchvision.models.mnasnet import _BN_MOMENTUM, _stack

from models._common import disable_inplace, init_convs_, stem_conv
from models.registry import register_model


@register_model
def mnasnet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = mnasnet1_0(num_classes=num_classes)
    model.layers[0] = stem_conv(model.layers[0], in_channels, stem)
    if stem == "small":
        # layers[8] is the first stack: 16 -> 24 channels, 3x3, expansion 3, 3 blocks
        model.layers[8] = init_convs_(_stack(16, 24, 3, 1, 3, 3, _BN_MOMENTUM))
    return disable_inplace(model)
