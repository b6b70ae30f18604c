"""VGG-16 with batch norm (Simonyan & Zisserman, 2015; configuration D), from torchvision.

13 convs + the 3-layer classifier. ``stem="small"`` is the authors' released CIFAR VGG:
all five max-pools (32 px: layer 0 is 512x2x2, the map ends at 1x1) and a classifier on the
512 pooled channels (33.6 M parameters instead of torchvision's 25,088-input 134 M). The pools
round up (``ceil_mode``), which changes nothing at 32 px and lets 28 px inputs through all
five. ``stem="imagenet"`` is torchvision's model (7x7 pooled classifier).
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
        for m in model.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[0] = nn.Linear(512, 4096)
        nn.init.normal_(model.classifier[0].weight, 0, 0.01)  # torchvision's linear init
        nn.init.zeros_(model.classifier[0].bias)
    return disable_inplace(model)
