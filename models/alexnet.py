"""AlexNet (Krizhevsky et al., 2012), on torchvision's single-GPU model.

``stem="small"``: the authors' released CIFAR AlexNet — five 3x3 convs (64, 192, 384, 256,
256; the first with stride 2), 2x2 max-pools after convs 1, 2 and 5, and the classifier on
the 256x2x2 map (32 px: layer 0 is 256x4x4, 23.3 M parameters). The pools round up
(``ceil_mode``), which changes nothing at 32 px and lets 28 px inputs reach 2x2 as well.

``stem="imagenet"``: torchvision's model (11x11 stride-4 first conv, 6x6 pooled classifier).
"""
import torch.nn as nn
from torchvision.models import AlexNet

from models._common import disable_inplace, stem_conv
from models.registry import register_model


def _cifar_features(in_channels: int) -> nn.Sequential:
    conv = lambda i, o, s=1: nn.Conv2d(i, o, 3, stride=s, padding=1)  # noqa: E731
    pool = lambda: nn.MaxPool2d(2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        conv(in_channels, 64, 2), nn.ReLU(), pool(),
        conv(64, 192), nn.ReLU(), pool(),
        conv(192, 384), nn.ReLU(), conv(384, 256), nn.ReLU(), conv(256, 256), nn.ReLU(), pool(),
    )


@register_model
def alexnet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = AlexNet(num_classes=num_classes)
    if stem == "small":
        model.features = _cifar_features(in_channels)
        model.avgpool = nn.AdaptiveAvgPool2d(2)
        model.classifier[1] = nn.Linear(256 * 2 * 2, 4096)
    else:
        model.features[0] = stem_conv(model.features[0], in_channels, stem)
    return disable_inplace(model)  # ReLU follows each conv directly, no BN in between
