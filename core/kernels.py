"""The background-kernel constraint (not in the paper): find the kernels whose gradient on
the annotated images falls on the background, and suppress the gradient on them.

At the start of every epoch :class:`KernelTerm` computes, per kernel ``k`` of a conv layer,
the share of its gradient that lies on the background of the annotated images
(:func:`kernel_background_share`) and flags the kernels a rule picks
(:func:`flag_kernels`); ``kernel_loss`` then penalises the gradient on them for every
training image. Optionally the flagged kernels are re-initialised before the first epoch
(``reinit``), with a random-kernel control (``reinit_random``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from core.grad_constraint import StepContext, Term, background_weights, layer_names
from core.gradients import eval_mode, layer_gradients

KERNEL_RULES = ("share", "excess", "rank")


def add_kernel_rule_args(p) -> None:
    """The flags choosing which kernels are background kernels (train_model_doctor.py and
    the shortcut benchmark, which passes them on)."""
    p.add_argument("--kernel_rule", default="share", choices=KERNEL_RULES,
                   help="which kernels are background kernels: share (its background share "
                        "> --kernel_tau), excess (share minus the background's share of the "
                        "area > --kernel_tau_excess), rank (the --kernel_top fraction with the "
                        "largest positive excess)")
    p.add_argument("--kernel_tau_excess", type=float, default=0.1,
                   help="--kernel_rule excess: how far a kernel's background share must "
                        "exceed the background's share of the area")
    p.add_argument("--kernel_top", type=float, default=0.1,
                   help="--kernel_rule rank: the fraction of a layer's kernels flagged "
                        "(rounded up; only kernels with a positive excess)")


def kernel_background_mass(grads_true: torch.Tensor,
                           background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_b Σ_hw Bg ⊙ |g|, Σ_b Σ_hw |g|)`` per kernel, each ``[K]`` (sums that add up over
    chunks of images); arguments as in :func:`kernel_background_share`."""
    h, w = grads_true.shape[-2:]
    bg = F.interpolate(background.to(grads_true.dtype), size=(h, w), mode="area")
    a = grads_true.abs()
    return (a * bg).sum(dim=(0, 2, 3)), a.sum(dim=(0, 2, 3))


def kernel_background_share(grads_true: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Per kernel, the share of gradient mass that falls on the annotated background.

    ``share_k = Σ_b Σ_hw Bg_b ⊙ |g_bk| / Σ_b Σ_hw |g_bk|`` over the annotated images.

    Args:
        grads_true: ``[B, K, H, W]`` ``∂y_n/∂m`` of annotated images.
        background: ``[B, 1, H0, W0]`` background weights
            (:func:`core.grad_constraint.background_weights`), resized to ``H × W`` by area
            averaging.
    Returns:
        ``[K]`` in [0, 1] (0 for a kernel without gradient).
    """
    on_background, total = kernel_background_mass(grads_true, background)
    return on_background / total.clamp_min(torch.finfo(total.dtype).tiny)


def background_area(background: torch.Tensor, size: Sequence[int]) -> tuple[float, int]:
    """``(Σ Bg, number of cells)`` of ``background`` (``[B, 1, H0, W0]``) resized to ``size``
    by area averaging: their ratio is the background's share of the area at that
    resolution, the share a kernel whose gradient is spread evenly would have."""
    bg = F.interpolate(background.float(), size=tuple(size), mode="area")
    return float(bg.sum()), bg.numel()


def flag_kernels(share: torch.Tensor, area: float, rule: str = "share", tau: float = 0.5,
                 tau_excess: float = 0.1, top: float = 0.1) -> torch.Tensor:
    """``[K]`` float in {0, 1}: the background kernels of a layer.

    Args:
        share: ``[K]`` background share of each kernel's gradient
            (:func:`kernel_background_share`).
        area: the background's share of the area at the layer's resolution
            (:func:`background_area`).
        rule: ``share``: ``share_k > tau``; ``excess``: ``share_k − area > tau_excess``;
            ``rank``: the ``top`` fraction of the kernels (rounded up) with the largest
            excess ``share_k − area``, among those whose excess is positive.
    """
    if rule == "share":
        return (share > tau).to(share.dtype)
    excess = share - area
    if rule == "excess":
        return (excess > tau_excess).to(share.dtype)
    if rule == "rank":
        count = min(len(share), math.ceil(top * len(share)))
        flagged = torch.zeros_like(share)
        best = excess.topk(count).indices
        flagged[best[excess[best] > 0]] = 1
        return flagged
    raise ValueError(f"kernel rule must be one of {KERNEL_RULES}, got {rule!r}")


def kernel_loss(grads_true: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``(1/B) Σ_b Σ_k D_k Σ_hw |∂y_n/∂m_k|``: gradient on the kernels ``D`` (``[K]`` in
    {0, 1}), for every image of the batch. ``grads_true``: ``[B, K, H, W]`` (or
    ``[J, B, K, H, W]``). Returns a scalar."""
    a = grads_true.abs().sum(dim=(-2, -1))                      # [..., B, K]
    per_sample = (a * kernels.to(a.dtype)).sum(dim=-1)
    return per_sample.reshape(-1, per_sample.shape[-1]).mean()


def random_like(kernels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """As many kernels per layer as ``kernels`` marks (``{layer: [K] in {0, 1}}``), drawn
    uniformly at random without replacement from torch's global generator."""
    drawn = {}
    for name, marked in kernels.items():
        pick = torch.zeros_like(marked)
        pick[torch.randperm(len(marked))[:int(marked.sum())].to(marked.device)] = 1
        drawn[name] = pick
    return drawn


@torch.no_grad()
def reinit_kernels(model: nn.Module, kernels: dict[str, torch.Tensor]) -> None:
    """Fresh Kaiming-normal (fan-out) weights, bias 0, for the kernels marked 1 in
    ``kernels`` (``{conv layer: [K]}``), as the networks are initialised; the other kernels
    keep theirs."""
    modules = dict(model.named_modules())
    for name, marked in kernels.items():
        conv, idx = modules[name], marked.bool().to(modules[name].weight.device)
        fresh = torch.empty_like(conv.weight)
        nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu")
        conv.weight[idx] = fresh[idx]
        if conv.bias is not None:
            conv.bias[idx] = 0


class KernelTerm(Term):
    """``Σ_r kernel_loss`` on the background kernels of ``layers``, found again at the start
    of every epoch (the network may move the shortcut to other kernels).

    Args:
        model: the classifier being treated.
        annotated: ``(images, labels, masks)`` of the annotated training images (eval
            transforms), on any device.
        layers: conv layers (index from the last conv, or name).
        rule / tau / tau_excess / top: which kernels are background kernels
            (:func:`flag_kernels`).
        expand_px: the mask expansion ``e`` before the background is taken.
        reinit: before the first epoch, also re-initialise the background kernels found on
            the model as given (:func:`reinit_kernels`), so the treatment starts without the
            shortcut's detectors instead of having to unlearn them.
        reinit_random: a control for ``reinit``: re-initialise as many kernels per layer as
            were found, drawn at random (:func:`random_like`, seeded by the run's seed)
            instead of the background ones; the constraint is unchanged. It says whether the
            diagnosis's choice of kernels matters or any fresh start would do.
    """
    name = "kernel"

    def __init__(self, model: nn.Module,
                 annotated: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                 layers: str | Sequence[int | str] = (-1,), weight: float = 1.0, *,
                 rule: str = "share", tau: float = 0.5, tau_excess: float = 0.1,
                 top: float = 0.1, expand_px: int = 0, reinit: bool = False,
                 reinit_random: bool = False):
        if annotated is None:
            raise ValueError("gamma > 0 needs annotated images (--mask_dir)")
        if rule not in KERNEL_RULES:
            raise ValueError(f"--kernel_rule must be one of {KERNEL_RULES}, got {rule!r}")
        if rule == "rank" and not 0 < top <= 1:
            raise ValueError(f"--kernel_top must be in (0, 1], got {top}")
        if reinit_random and not reinit:
            raise ValueError("--kernel_reinit_random is a control for --kernel_reinit: give both")
        super().__init__(weight, layer_names(model, layers))
        self.model, self.annotated, self.expand_px = model, annotated, expand_px
        self.rule, self.tau, self.tau_excess, self.top = rule, tau, tau_excess, top
        self.reinit, self.reinit_random = reinit, reinit_random
        self.kernels: dict[str, torch.Tensor] = {}
        self.area: dict[str, float] = {}

    def find_kernels(self, chunk: int = 256) -> dict[str, torch.Tensor]:
        """``{layer: [K] float in {0, 1}}``: the background kernels of each layer, from the
        annotated images with the model in eval mode (its mode is restored); also sets
        :attr:`area`, ``{layer: the background's share of the area}``.

        Under DDP every rank holds all annotated images and the same weights, but its BN
        running statistics drift from the other ranks' between DDP's buffer broadcasts, so
        the eval-mode gradients (hence the threshold) may differ slightly: rank 0's kernels
        are broadcast, and every rank suppresses the same ones."""
        images, labels, masks = self.annotated
        device = next(self.model.parameters()).device
        num = {n: 0.0 for n in self.layers}
        den = {n: 0.0 for n in self.layers}
        area = {n: [0.0, 0] for n in self.layers}
        with eval_mode(self.model):
            for i in range(0, len(images), chunk):
                x = images[i:i + chunk].to(device)
                y = labels[i:i + chunk].to(device)
                bg = background_weights(masks[i:i + chunk].to(device),
                                        torch.ones(len(x), dtype=torch.bool, device=device),
                                        self.expand_px)
                for n, g in layer_gradients(self.model, x, y, self.layers).items():
                    on_background, total = kernel_background_mass(g[0], bg)
                    num[n] = num[n] + on_background
                    den[n] = den[n] + total
                    s, cells = background_area(bg, g.shape[-2:])
                    area[n] = [area[n][0] + s, area[n][1] + cells]
        self.area = {n: s / max(cells, 1) for n, (s, cells) in area.items()}
        self.kernels = {n: flag_kernels(num[n] / den[n].clamp_min(1e-30), self.area[n],
                                        self.rule, self.tau, self.tau_excess, self.top)
                        for n in self.layers}
        if dist.is_available() and dist.is_initialized():
            for k in self.kernels.values():
                dist.broadcast(k, src=0)
        return self.kernels

    def start_epoch(self, epoch: int) -> dict:
        """Find the background kernels (and re-initialise them before the first epoch if
        asked); returns the number flagged per layer, ``kernels/<layer>``."""
        kernels = self.find_kernels()
        if self.reinit and epoch == 1:    # a resumed run has them in its checkpoint
            reinit_kernels(self.model, random_like(kernels) if self.reinit_random else kernels)
        return {f"kernels/{n}": int(k.sum()) for n, k in kernels.items()}

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        if not self.kernels:
            self.find_kernels()
        return sum(kernel_loss(ctx.grads_true[n], self.kernels[n].to(ctx.logits.device))
                   for n in self.layers)

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        if args.kernel_reinit_random and not args.kernel_reinit:
            raise ValueError("--kernel_reinit_random is a control for --kernel_reinit: give both")
        if args.gamma <= 0:
            if args.kernel_reinit:
                raise ValueError("--kernel_reinit re-initialises the background kernels: it "
                                 "needs --gamma > 0")
            return None
        return cls(model, annotated, args.kernel_layers, args.gamma, rule=args.kernel_rule,
                   tau=args.kernel_tau, tau_excess=args.kernel_tau_excess, top=args.kernel_top,
                   expand_px=args.expand_px, reinit=args.kernel_reinit,
                   reinit_random=args.kernel_reinit_random)
