"""Inception-v3 (Szegedy et al., 2016), torchvision's model without the auxiliary head.

``stem="small"``: the authors' released CIFAR Inception-v3 — the five stem convs at stride 1
(all padded but ``Conv2d_4a_3x3``) and no stem max-pools, a 3x3 pool projection in the
``Mixed_5*`` blocks (:class:`InceptionA3x3Pool`) and average pooling in ``Mixed_7a``
(:class:`InceptionDAvgPool`); 32 px reaches ``Mixed_7c`` at 6x6.

``stem="imagenet"``: torchvision's model (needs at least 75 px).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import Inception3
from torchvision.models.inception import (BasicConv2d, InceptionA, InceptionAux, InceptionB,
                                          InceptionC, InceptionD, InceptionE)

from models._common import disable_inplace, stem_conv
from models.registry import register_model


class InceptionA3x3Pool(InceptionA):
    def __init__(self, in_channels: int, pool_features: int, conv_block=None) -> None:
        super().__init__(in_channels, pool_features, conv_block)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=3, padding=1)


class InceptionDAvgPool(InceptionD):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = conv(branch7x7x3)
        return [branch3x3, branch7x7x3, F.avg_pool2d(x, kernel_size=3, stride=2)]


@register_model
def inceptionv3(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    blocks = None
    if stem == "small":
        blocks = [BasicConv2d, InceptionA3x3Pool, InceptionB, InceptionC, InceptionDAvgPool,
                  InceptionE, InceptionAux]
    model = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False,
                       inception_blocks=blocks, init_weights=True)
    model.Conv2d_1a_3x3.conv = stem_conv(model.Conv2d_1a_3x3.conv, in_channels, stem)
    if stem == "small":
        model.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3, padding=1)
        model.maxpool1 = nn.Identity()
        model.maxpool2 = nn.Identity()
    return disable_inplace(model)
