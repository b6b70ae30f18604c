"""SqueezeNet 1.1 (Iandola et al., 2016; the v1.1 revision of the authors' repository).

The classifier is a 1x1 conv to ``num_classes`` + ReLU + global average pool, so the last
``Conv2d`` of this model is the classifier itself. The small stem uses a 3x3 stride-1
first conv and drops the first max-pool.
"""
import torch.nn as nn
from torchvision.models import SqueezeNet

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def squeezenet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = SqueezeNet(version="1_1", num_classes=num_classes)
    model.features[0] = stem_conv(model.features[0], in_channels, stem)
    if stem == "small":
        model.features[2] = nn.Identity()  # first max-pool
    return disable_inplace(model)  # Fire modules put ReLU straight after each conv
