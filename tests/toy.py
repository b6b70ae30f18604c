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
