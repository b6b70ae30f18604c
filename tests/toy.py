"""Toy networks whose gradients have closed forms, for hand-checked tests.

``ToyNet``: ``m = conv1x1(x)`` (``K`` channels), ``y_n = Σ_k W[n,k] Σ_hw relu(m_k)``, so
``∂y_n/∂m_k[h,w] = W[n,k] · 1[m_k[h,w] > 0]``.
"""
import torch
import torch.nn as nn


class ToyNet(nn.Module):
    def __init__(self, in_channels=1, channels=3, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 1, bias=True)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).sum(dim=(2, 3)))


def make_toy(seed=0, in_channels=1, channels=3, num_classes=4):
    torch.manual_seed(seed)
    net = ToyNet(in_channels, channels, num_classes)
    with torch.no_grad():
        net.fc.weight.copy_(torch.randn(num_classes, channels))
    return net.eval()


def conv_out(net, x):
    with torch.no_grad():
        return net.conv(x)


def make_background_toy(batch=6, size=4):
    """Kernel 0 sees input channel 0, a texture on the background only; kernel 1 sees
    channel 1, the object (the centre square). Returns ``(net, x, fg)``; ``fg`` is the
    ``[B, 1, H, W]`` object mask. Background cells: ``size² − 4``, object cells: 4."""
    net = make_toy(in_channels=2, channels=2, num_classes=3)
    with torch.no_grad():
        net.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net.conv.bias.fill_(-0.1)
    fg = torch.zeros(batch, 1, size, size)
    fg[:, :, 1:3, 1:3] = 1.0
    x = torch.cat([1.0 - fg, 2.0 * fg], dim=1)
    return net, x, fg
