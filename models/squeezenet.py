"""SqueezeNet (Iandola et al., 2016).

``stem="small"``: the authors' released CIFAR SqueezeNet — a 96-channel 3x3 stem conv and a
2x2 max-pool, eight Fire modules with BN after every conv and simple bypasses around fire 3,
5 and 7, 2x2 max-pools after fire 4 and 8, then a 1x1 conv to ``num_classes`` and global
average pooling (no ReLU). The last ``Conv2d`` (layer 0) is that classifier conv: at 32 px
``num_classes`` x 4 x 4.

``stem="imagenet"``: torchvision's SqueezeNet 1.1 (the v1.1 revision of the authors'
repository; no BN, classifier conv + ReLU), whose last conv is likewise the classifier.
"""
import torch
import torch.nn as nn
from torchvision.models import SqueezeNet
from torchvision.ops.misc import Conv2dNormActivation

from models._common import disable_inplace, stem_conv
from models.registry import register_model


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, bias=True, inplace=False)


class Fire(nn.Module):
    """1x1 squeeze, then 1x1 and 3x3 expansions to ``out_channels / 2`` each, concatenated."""

    def __init__(self, in_channels: int, out_channels: int, squeeze: int) -> None:
        super().__init__()
        self.squeeze = _conv(in_channels, squeeze, 1)
        self.expand1x1 = _conv(squeeze, out_channels // 2, 1)
        self.expand3x3 = _conv(squeeze, out_channels // 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class CifarSqueezeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(in_channels, 96, 3), nn.MaxPool2d(2))
        self.fire2, self.fire3 = Fire(96, 128, 16), Fire(128, 128, 16)
        self.fire4, self.fire5 = Fire(128, 256, 32), Fire(256, 256, 32)
        self.fire6, self.fire7 = Fire(256, 384, 48), Fire(384, 384, 48)
        self.fire8, self.fire9 = Fire(384, 512, 64), Fire(512, 512, 64)
        self.classifier = nn.Conv2d(512, num_classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.fire2(self.stem(x))
        f3 = self.fire3(f2) + f2
        f4 = self.pool(self.fire4(f3))
        f5 = self.fire5(f4) + f4
        f6 = self.fire6(f5)
        f7 = self.fire7(f6) + f6
        f8 = self.pool(self.fire8(f7))
        x = self.classifier(self.fire9(f8))
        return torch.flatten(self.avgpool(x), 1)


@register_model
def squeezenet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        return disable_inplace(CifarSqueezeNet(num_classes, in_channels))
    model = SqueezeNet(version="1_1", num_classes=num_classes)
    model.features[0] = stem_conv(model.features[0], in_channels, stem)
    return disable_inplace(model)  # Fire modules put ReLU straight after each conv
