"""GoogLeNet / Inception v1 (Szegedy et al., 2015), torchvision's model (batch norm after
every conv) without the auxiliary heads.

``stem="small"``: the authors' released CIFAR GoogLeNet — three 3x3 stride-1 convs (64, 64,
192) before ``inception3a``, three 3x3 stride-2 max-pools between the inception stages (32 px:
16, 8 and 4; layer 0 is ``inception5b``'s 128-channel pool projection at 4x4), the "5x5" branch
as two stacked 3x3 convs (:class:`InceptionDouble3x3`) and dropout 0.4. (The released file
passes that branch's width as the middle BN's ``eps``, a typo not kept here.)

``stem="imagenet"``: torchvision's stem (7x7 stride-2 conv, max-pools); torchvision's
Inception block uses a 3x3 conv in the "5x5" branch (a known bug kept for its pretrained
weights, pytorch/vision#906), :class:`Inception5x5` restores the paper's 5x5.
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


class InceptionDouble3x3(Inception):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int, conv_block=None) -> None:
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                         conv_block)
        self.branch3.append(BasicConv2d(ch5x5, ch5x5, kernel_size=3, padding=1))


@register_model
def googlenet(num_classes: int, in_channels: int, stem: str) -> nn.Module:
    if stem == "small":
        model = GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False,
                          init_weights=True, dropout=0.4,
                          blocks=[BasicConv2d, InceptionDouble3x3, InceptionAux])
        model.maxpool1 = nn.Identity()
        model.conv2 = BasicConv2d(64, 64, kernel_size=3, padding=1)
        model.maxpool2, model.maxpool3, model.maxpool4 = (
            nn.MaxPool2d(3, stride=2, padding=1) for _ in range(3))
    else:
        model = GoogLeNet(num_classes=num_classes, aux_logits=False, transform_input=False,
                          init_weights=True, blocks=[BasicConv2d, Inception5x5, InceptionAux])
    model.conv1.conv = stem_conv(model.conv1.conv, in_channels, stem)
    return disable_inplace(model)
