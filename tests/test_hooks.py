"""Forward hooks on conv layers (core/hooks.py): removed on exit, errors not swallowed."""
import pytest
import torch

from core.hooks import FeatureHooks
from toy import make_toy


def test_hooks_removed_and_memory_flat():
    net = make_toy()
    x = torch.randn(2, 1, 3, 3)
    for _ in range(100):
        with FeatureHooks(net, [0]) as hooks:
            net(x)
            assert hooks.features["conv"].shape == (2, 3, 3, 3)
    assert not net.conv._forward_hooks
    hooks = FeatureHooks(net, [0])
    hooks.remove()
    hooks.remove()      # safe twice
    assert not net.conv._forward_hooks and not hooks.features


def test_hooks_do_not_swallow_errors():
    net = make_toy()
    with pytest.raises(RuntimeError):
        with FeatureHooks(net, [0]):
            net(torch.randn(2, 5, 3, 3))     # wrong channels
    assert not net.conv._forward_hooks
