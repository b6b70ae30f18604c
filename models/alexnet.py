"""AlexNet (Krizhevsky et al., 2012), torchvision's single-GPU variant.

The classifier sits behind ``AdaptiveAvgPool2d((6, 6))``, so any input size works. The
small stem uses a 3x3 stride-1 first conv and drops the first max-pool.
"""
import torch.nn as nn
from torchvision.models import AlexNet

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def alexnet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = AlexNet(num_classes=num_classes)
    model.features[0] = stem_conv(model.features[0], in_channels, stem)
    if stem == "small":
        model.features[2] = nn.Identity()  # first max-pool
    return disable_inplace(model)  # ReLU follows each conv directly, no BN in between
