"""Forward hooks on conv layers: capture (and optionally perturb) their outputs."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from models import load_modules


def feature_noise(shape: Sequence[int], delta: float, *, dtype: torch.dtype,
                  device: torch.device | str) -> torch.Tensor:
    """``σ ~ U[-δ, δ]`` i.i.d. of ``shape`` (paper Eq. 4), one draw on the default generator.

    The only place the feature noise is drawn: :class:`FeatureHooks` (noise on the J·B
    copies a whole-network pass sees) and :mod:`core.tail` (noise on the head's map repeated
    J times) both call it with the same ``[J·B, K, H, W]`` shape, so under one seed the tail
    split and its fallback see the same ``σ``.
    """
    return torch.empty(tuple(shape), dtype=dtype, device=device).uniform_(-delta, delta)


class FeatureHooks:
    """Owns forward hooks on a set of ``Conv2d`` layers of ``model``.

    After a forward pass, ``features[name]`` holds the map the rest of the network consumed:
    the conv output ``m`` of shape ``[B, K, H, W]``, or ``m + σ`` with ``σ ~ U[-δ, δ]`` drawn
    afresh for every call when ``noise_delta > 0`` (:func:`feature_noise`). The stored
    tensor is part of the autograd graph, so ``torch.autograd.grad(score, features[name])``
    gives ``∂score / ∂(m + σ)``; if nothing upstream requires grad, the hook makes the map a
    leaf that does.

    Args:
        model: the network.
        layers: conv layers by name or index from the last conv (0 = last), see
            :func:`models.load_modules`.
        noise_delta: half-width δ of the uniform noise added at the hooked layers.

    Use as a context manager, or call :meth:`remove` (safe to call twice).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int | str] = (0,),
                 noise_delta: float = 0.0):
        self.modules = load_modules(model, list(layers))
        self.names = [name for name, _ in self.modules]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"layers {list(layers)} name the same conv twice: {self.names}")
        self.noise_delta = noise_delta
        self.enabled = True
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        try:
            for name, module in self.modules:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not self.enabled:
                return None
            if self.noise_delta > 0:
                output = output + feature_noise(output.shape, self.noise_delta,
                                                dtype=output.dtype, device=output.device)
            if not output.requires_grad and torch.is_grad_enabled():
                output = output.detach().requires_grad_(True)
            self.features[name] = output
            return output
        return hook

    def channels(self) -> dict[str, int]:
        return {name: module.out_channels for name, module in self.modules}

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features = {}

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
