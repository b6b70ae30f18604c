"""EfficientNetV2-S (Tan & Le, 2021), built from torchvision's block configurations.

The small stem uses a stride-1 first conv and stride 1 in the second stage, so the overall
stride is 8 (32 px -> 4x4). The MBConv blocks keep torchvision's squeeze-excitation, whose
gates are 1x1 convs: they appear in :func:`models.load_modules`, but the last conv (index 0)
is the 1x1 head conv to 1280 channels.
"""
from functools import partial

import torch.nn as nn
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

from models._common import disable_inplace, stem_conv
from models.registry import register_model


@register_model
def efficientnetv2s(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    stage2_stride = 1 if stem == "small" else 2
    # expand ratio, kernel, stride, in channels, out channels, layers (Table 4 of the paper)
    setting = [
        FusedMBConvConfig(1, 3, 1, 24, 24, 2),
        FusedMBConvConfig(4, 3, stage2_stride, 24, 48, 4),
        FusedMBConvConfig(4, 3, 2, 48, 64, 4),
        MBConvConfig(4, 3, 2, 64, 128, 6),
        MBConvConfig(6, 3, 1, 128, 160, 9),
        MBConvConfig(6, 3, 2, 160, 256, 15),
    ]
    model = EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2,
                         num_classes=num_classes, last_channel=1280,
                         norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    model.features[0][0] = stem_conv(model.features[0][0], in_channels, stem)
    return disable_inplace(model)
