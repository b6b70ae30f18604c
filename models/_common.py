"""Helpers shared by the builders: a fresh first conv for the chosen stem, and hook safety."""
from __future__ import annotations

import torch.nn as nn

# The CIFAR-literature stem: a 3x3 stride-1 first conv keeps 28/32 px inputs at full size.
SMALL_STEM_CONV = dict(kernel_size=3, stride=1, padding=1)


def init_convs_(module: nn.Module) -> nn.Module:
    """Kaiming (fan-out) init for every conv in ``module``, as torchvision's ResNets do."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def stem_conv(conv: nn.Conv2d, in_channels: int, stem: str) -> nn.Conv2d:
    """A freshly initialised copy of the first conv ``conv`` that reads ``in_channels``.

    ``stem="small"`` makes it 3x3 with stride 1 (:data:`SMALL_STEM_CONV`); ``"imagenet"``
    keeps the architecture's own kernel, stride and padding.
    """
    spec = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding)
    if stem == "small":
        spec.update(SMALL_STEM_CONV)
    new = nn.Conv2d(in_channels, conv.out_channels, bias=conv.bias is not None, **spec)
    return init_convs_(new)


def disable_inplace(model: nn.Module) -> nn.Module:
    """Turn off ``inplace`` on every module (ReLU, ReLU6, SiLU, Hardswish, Dropout, ...).

    Model Doctor takes gradients w.r.t. conv outputs seen by forward hooks; an in-place
    activation straight after a conv (AlexNet, SqueezeNet's Fire) would overwrite the very
    tensor the hook stored and break autograd.
    """
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model
