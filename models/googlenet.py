"""GoogLeNet / Inception v1 (Szegedy et al., 2015), torchvision's model (batch norm after
every conv) without the auxiliary heads.

torchvision's Inception block uses a 3x3 conv in the "5x5" branch (a known bug kept for its
pretrained weights, pytorch/vision#906); :class:`Inception5x5` restores the paper's 5x5.
The small stem uses a 3x3 stride-1 first conv and drops the two max-pools before
``inception3a`` (32 px -> 8x8 at ``inception5b``), as in the CIFAR versions of GoogLeNet.
"""
import torch.nn as nn
from torchvision.models import GoogLeNet
from torchvision.models.googlenet import BasicConv2d, Inception, InceptionAux

from models._common import disable_inplace, stem_conv
from models.registry import register_model


class Inception5x5(Inception):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int, conv_block=None) -> None:
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                         conv_block)
        self.branch3[1] = BasicConv2d(ch5x5red, ch5x5, kernel_size=5, padding=2)


@register_model
def googlenet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    model = GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False,
                      init_weights=True, blocks=[BasicConv2d, Inception5x5, InceptionAux])
    model.conv1.conv = stem_conv(model.conv1.conv, in_channels, stem)
    if stem == "small":
        model.maxpool1 = nn.Identity()
        model.maxpool2 = nn.Identity()
    return disable_inplace(model)
