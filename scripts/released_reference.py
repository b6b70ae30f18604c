"""The released code's computation, re-implemented as a baseline for ``scripts/benchmark.py``.

Follows the authors' release (``core/grad_calculate.py``, ``core/grad_constraint.py``) as
the README describes it (Method), keeping what makes it slow or memory-hungry, so the benchmark can
say how far the project's implementation is from it and check that both compute the same:

* **Statistics** hook *every* conv layer and keep every per-image gradient map: per layer and
  class, a list of ``[K, H, W]`` tensors, appended in a Python loop over the batch and
  stacked only at the end. The gradient is that of the batch-*mean* logit
  (``-NLLLoss(outputs, labels)`` on raw logits, i.e. ``(1/B) ∂y_{b,n_b}/∂m``), taken with
  ``create_graph=True``, one ``autograd.grad`` call per layer, rectified with ``relu``;
  ``J = 1, δ = 0``. Then ``A_n = Σ``, min–max per class row, ``M = Â > θ``.
* **Treatment**: the channel loss takes two gradient calls of batch-mean logits (second
  class, then true class) and averages per-sample penalties again, with per-sample Python
  loops; the second term is weighted by ``M[s]``. The spatial loss takes a third gradient
  call and sums ``|(1 − resize(F)) · ∂ȳ/∂m|``.

Relation to the project (checked by ``tests/test_benchmark.py``): with equal batch sizes,
``A_released · B = A`` of ``compute_statistics(J=1, δ=0, grad_mode="relu")``; the channel
loss of ``DoctorLoss(grad_mode="relu", second_term="mask")`` is the released one times ``B``;
the spatial losses are equal when the mask is resized the same way (the release resizes
bilinearly, the project by area).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.extra_loss import ExtraLoss
from loaders import Batch
from models import load_modules

NORM_EPS = 1e-5


class HookModule:
    """Keeps a conv layer's last output; ``grads`` differentiates w.r.t. it (released API)."""

    def __init__(self, module: nn.Module):
        self.outputs = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, outputs):
        self.outputs = outputs

    def grads(self, outputs, inputs=None, retain_graph=True, create_graph=True):
        inputs = self.outputs if inputs is None else inputs
        return torch.autograd.grad(outputs, inputs, retain_graph=retain_graph,
                                   create_graph=create_graph)[0]

    def remove(self) -> None:
        self.handle.remove()
        self.outputs = None


class ReleasedGradCalculate:
    """Released diagnosis: stores ``relu(∂ȳ/∂m)[b]`` (``[K, H, W]``) of every image and layer.

    Args:
        model: the classifier (the caller puts it in eval mode, as the release does).
        num_classes: number of classes.
        layers: conv layers (see :func:`models.load_modules`); ``None`` = every conv, as
            released.
    """

    def __init__(self, model: nn.Module, num_classes: int,
                 layers: Sequence[int | str] | None = None):
        chosen = load_modules(model, None if layers is None else list(layers))
        self.names = [name for name, _ in chosen]
        self.hooks = [HookModule(module) for _, module in chosen]
        self.num_classes = num_classes
        # [layer][class] -> list of per-image [K, H, W] maps
        self.values = [[[] for _ in range(num_classes)] for _ in chosen]

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        nll_loss = F.nll_loss(outputs, labels)          # raw logits: -mean_b y[b, n_b]
        for layer, hook in enumerate(self.hooks):
            values = torch.relu(hook.grads(-nll_loss)).detach().cpu()
            for b in range(len(labels)):
                self.values[layer][int(labels[b])].append(values[b])

    def sift(self, theta: float = 0.2) -> dict[str, dict[str, torch.Tensor]]:
        """``{layer: {"sum": A [C, K], "normalized": Â, "mask": M}}`` (float32, as released)."""
        out = {}
        for name, per_class in zip(self.names, self.values):
            counts = {len(v) for v in per_class}
            if 0 in counts:
                raise ValueError("the released statistics need images of every class")
            if len(counts) == 1:      # released: one [C, N, K, H, W] array of the layer
                values = torch.stack([torch.stack(v) for v in per_class])
                sums = values.sum(dim=(3, 4)).sum(dim=1)
            else:
                sums = torch.stack([torch.stack(v).sum(dim=(0, 2, 3)) for v in per_class])
            lo = sums.min(dim=1, keepdim=True).values
            hi = sums.max(dim=1, keepdim=True).values
            normalized = (sums - lo) / (hi - lo + NORM_EPS)
            out[name] = {"sum": sums, "normalized": normalized,
                         "mask": (normalized > theta).to(torch.float32)}
        return out

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def released_statistics(model: nn.Module, loader, num_classes: int, device: torch.device,
                        layers: Sequence[int | str] | None = None, theta: float = 0.2):
    """Run the released diagnosis over ``loader`` (batches with ``image`` and ``label``)."""
    model.eval()
    calculate = ReleasedGradCalculate(model, num_classes, layers)
    try:
        for batch in loader:
            images, labels = batch.image.to(device), batch.label.to(device)
            calculate(model(images), labels)
        return calculate.sift(theta)
    finally:
        calculate.remove()


def _loss_channel(channels: torch.Tensor, grads: torch.Tensor, labels: torch.Tensor,
                  is_high: bool) -> torch.Tensor:
    channel_grads = torch.relu(grads).sum(dim=(2, 3))     # [B, K]
    loss = 0
    for b, label in enumerate(labels):
        weight = channels[label] if is_high else 1 - channels[label]
        loss = loss + (channel_grads[b] * weight).sum()
    return loss / len(labels)


class ReleasedGradConstraint(ExtraLoss):
    """Released treatment loss on one conv layer, as an ``extra_loss`` for
    ``train.train_one_epoch`` (masks read from ``batch.mask``).

    Args:
        model: the classifier. layer: the constrained conv (index from the last or name).
        channels: ``[C, K]`` class-channel mask ``M``.
        alpha, beta: weights, released scale (channel loss = project's / B).
        resize: how the foreground mask is brought to the layer's size: ``bilinear``
            (released ``transforms.Resize``) or ``area`` (the project's).
    """

    def __init__(self, model: nn.Module, layer: int | str, channels: torch.Tensor,
                 alpha: float, beta: float, resize: str = "bilinear"):
        (_, module), = load_modules(model, [layer])
        self.hook = HookModule(module)
        self.channels = channels
        self.alpha, self.beta = alpha, beta
        self.resize = resize

    def loss_channel(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        channels = self.channels.to(outputs.device)
        probs = torch.argsort(-outputs, dim=1)
        labels_ = []
        for i in range(len(labels)):
            labels_.append(probs[i][1] if probs[i][0] == labels[i] else probs[i][0])
        labels_ = torch.stack(labels_)
        loss = _loss_channel(channels, self.hook.grads(-F.nll_loss(outputs, labels_)),
                             labels_, is_high=True)
        loss = loss + _loss_channel(channels, self.hook.grads(-F.nll_loss(outputs, labels)),
                                    labels, is_high=False)
        return loss * self.alpha

    def loss_spatial(self, outputs: torch.Tensor, labels: torch.Tensor,
                     masks: torch.Tensor) -> torch.Tensor:
        grads = self.hook.grads(-F.nll_loss(outputs, labels))
        size = grads.shape[2:]
        if self.resize == "area":
            masks = F.interpolate(masks, size=size, mode="area")
        else:   # transforms.Resize on a tensor, as in the torchvision of the release
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        return torch.abs((1 - masks) * grads).sum() * self.beta

    def __call__(self, batch, images, labels, logits) -> tuple[torch.Tensor, dict]:
        loss_c = self.loss_channel(logits, labels)
        terms = {"channel": loss_c.item()}
        loss = loss_c
        if isinstance(batch, Batch):   # released: whenever masks are loaded, even at beta 0
            loss_s = self.loss_spatial(logits, labels, batch.mask.to(logits.device))
            terms["spatial"] = loss_s.item()
            loss = loss + loss_s
        return loss, terms

    def remove(self) -> None:
        self.hook.remove()
