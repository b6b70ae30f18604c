"""Treatment: the channel-wise (paper Eq. 5) and spatial (Eq. 6) constraints.

The losses are pure functions of per-sample gradients. :class:`DoctorLoss` owns the hooks
on the constrained layers, takes those gradients with ``create_graph=True`` (so the
penalties train the weights) and plugs into ``train.train_one_epoch`` as ``extra_loss``
(:class:`core.extra_loss.ExtraLoss`).

Scale (README: Method): per-sample penalties are averaged over the batch, so the loss does not
depend on the batch size. The released channel loss equals ours divided by the batch size
``B``: its ``alpha = 10`` at ``B = 128`` is ``alpha ≈ 0.078`` here. The spatial loss has the
released scale (``beta`` carries over).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from core.channel_stats import ChannelStatistics, rectify
from core.extra_loss import ExtraLoss
from core.gradients import eval_mode, layer_gradients
from core.hooks import FeatureHooks
from core.tail import SplitError, split_or_none
from loaders import MASK_IGNORE, MASK_OBJECT, Batch, PlainBatch, batch_masks
from models import load_modules

SECOND_TERMS = ("all", "mask")


def second_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The competing class ``s``: top-2 if top-1 is the label, else the (wrong) top-1.

    Args:
        logits: ``[B, C]``; labels: ``[B]``. Returns ``[B]``.
    """
    top2 = logits.detach().topk(2, dim=1).indices
    return torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])


def _channel_mass(grads: torch.Tensor, grad_mode: str) -> torch.Tensor:
    """``[..., B, K, H, W]`` → ``[B, K]``: rectified, summed over space, averaged over the
    leading noise-draw dims (if any)."""
    a = rectify(grads, grad_mode).sum(dim=(-2, -1))
    return a.reshape(-1, *a.shape[-2:]).mean(dim=0)


def channel_loss(grads_true: torch.Tensor, grads_second: torch.Tensor, mask: torch.Tensor,
                 labels: torch.Tensor, second: torch.Tensor, grad_mode: str = "abs",
                 second_term: str = "all") -> torch.Tensor:
    """Paper Eq. 5, averaged over the batch.

    ``Σ_k (1 − M[n,k]) Σ_hw c(∂y_n/∂m_k) + Σ_k W_s[k] Σ_hw c(∂y_s/∂m_k)`` with
    ``W_s = 1`` (``second_term="all"``, paper) or ``W_s = M[s]`` (``"mask"``, released).

    Args:
        grads_true: ``[B, K, H, W]`` (or ``[J, B, K, H, W]`` for J noise draws) ``∂y_n/∂m``.
        grads_second: same shape, ``∂y_s/∂m``.
        mask: ``[C, K]`` class-channel mask ``M`` in {0, 1}.
        labels: ``[B]`` true classes ``n``; second: ``[B]`` competing classes ``s``.
    Returns:
        scalar tensor.
    """
    if second_term not in SECOND_TERMS:
        raise ValueError(f"second_term must be one of {SECOND_TERMS}, got {second_term!r}")
    a_true = _channel_mass(grads_true, grad_mode)
    a_second = _channel_mass(grads_second, grad_mode)
    mask = mask.to(a_true.dtype)
    w_second = mask[second] if second_term == "mask" else torch.ones_like(a_second)
    per_sample = ((1 - mask[labels]) * a_true).sum(dim=1) + (w_second * a_second).sum(dim=1)
    return per_sample.mean()


def disk_kernel(radius: int, device=None) -> torch.Tensor:
    """``[2r+1, 2r+1]`` ones where ``dx² + dy² ≤ r²``."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Exact Euclidean dilation: a pixel within distance ``radius`` of the object becomes
    object. ``mask``: ``[B, 1, H, W]`` in {0, 1}."""
    if radius <= 0:
        return mask
    kernel = disk_kernel(radius, mask.device).to(mask.dtype)[None, None]
    return (F.conv2d(mask, kernel, padding=radius) > 0.5).to(mask.dtype)


def background_weights(masks: torch.Tensor, annotated: torch.Tensor,
                       expand_px: int = 0) -> torch.Tensor:
    """``Bg = (1 − dilate(F, e)) ⊙ (1 − I)`` for annotated images, 0 for the others.

    Args:
        masks: ``[B, 1, H, W]`` masks at input resolution in the loader's codes
            (``loaders.decode_mask``): 1 = object ``F``, 0 = background, 2 = ignore ``I``
            (labelme ``__ignore__``: weight 0, and not expanded like the object).
        annotated: ``[B]`` bool. Returns ``[B, 1, H, W]``.
    """
    fg = dilate((masks.round() == MASK_OBJECT).float(), expand_px)
    keep = (masks.round() != MASK_IGNORE).to(fg.dtype)
    return (1 - fg) * keep * annotated.to(fg.dtype).view(-1, 1, 1, 1)


def spatial_loss(grads_true: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 6, averaged over the batch: ``Σ_k Σ_hw Bg ⊙ |∂y_n/∂m_k|``.

    Args:
        grads_true: ``[B, K, H, W]`` (or ``[J, B, K, H, W]``) ``∂y_n/∂m``.
        background: ``[B, 1, H0, W0]`` background weights at any resolution; resized to
            ``H × W`` by area averaging (the share of background in each cell).
    Returns:
        scalar tensor.
    """
    h, w = grads_true.shape[-2:]
    bg = F.interpolate(background.to(grads_true.dtype), size=(h, w), mode="area")
    a = (grads_true.abs() * bg).sum(dim=(-3, -2, -1))         # [..., B]
    return a.reshape(-1, a.shape[-1]).mean()


def background_share(grads_true: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Per kernel, the share of gradient mass that falls on the annotated background.

    ``share_k = Σ_b Σ_hw Bg_b ⊙ |g_bk| / Σ_b Σ_hw |g_bk|`` over the annotated images.

    Args:
        grads_true: ``[B, K, H, W]`` ``∂y_n/∂m`` of annotated images.
        background: ``[B, 1, H0, W0]`` background weights (:func:`background_weights`),
            resized to ``H × W`` by area averaging.
    Returns:
        ``[K]`` in [0, 1] (0 for a kernel without gradient).
    """
    on_background, total = background_mass(grads_true, background)
    return on_background / total.clamp_min(torch.finfo(total.dtype).tiny)


def background_mass(grads_true: torch.Tensor,
                    background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_b Σ_hw Bg ⊙ |g|, Σ_b Σ_hw |g|)`` per kernel, each ``[K]`` (sums that add up over
    chunks of images); arguments as in :func:`background_share`."""
    h, w = grads_true.shape[-2:]
    bg = F.interpolate(background.to(grads_true.dtype), size=(h, w), mode="area")
    a = grads_true.abs()
    return (a * bg).sum(dim=(0, 2, 3)), a.sum(dim=(0, 2, 3))


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


class DoctorLoss(ExtraLoss):
    """``alpha · Σ_r L_ch^r + beta · Σ_r L_sp^r (+ gamma · Σ_r L_kernel^r)`` as an
    ``extra_loss`` for ``train.fit``.

    Built with keyword arguments only; the hooks it registers are removed by :meth:`remove`
    or on leaving ``with DoctorLoss(model=..., ...) as loss:``.

    Args:
        model: the classifier being treated.
        stats: channel statistics (needed when ``alpha > 0`` and channel layers are set).
        channel_layers / spatial_layers: conv layers (index from the last conv or name).
        grad_mode: ``abs`` or ``relu`` for the channel term.
        second_term: ``all`` (paper) or ``mask`` (released).
        noise_draws / noise_delta: J and δ; with noise, each constrained layer gets its own
            forward pass of J noisy copies (default J=1, δ=0 reuses the training forward).
        expand_px: mask expansion ``e`` at input resolution.
        gamma / kernel_layers / kernel_tau / annotated: the background-kernel constraint
            (not in the paper): at the start of every epoch the kernels whose gradient on
            the ``annotated`` images ``(images, labels, masks)`` (eval transforms) falls
            mostly on the background (share > ``kernel_tau``, :func:`background_share`)
            are found, and ``gamma · kernel_loss`` suppresses the gradient on them for
            every training image, annotated or not.
        kernel_reinit: before the first epoch, also re-initialise the weights of the
            background kernels found on the model as given (Kaiming normal, fan-out, as the
            networks are initialised; bias 0), so the treatment starts without the shortcut's
            detectors instead of having to unlearn them (not in the paper).
        reinit_random: a control for ``kernel_reinit``: re-initialise as many kernels per
            layer as were found, drawn at random (``torch.randperm``, seeded by the run's
            seed) instead of the background ones; the kernel constraint is unchanged. It
            says whether the diagnosis's choice of kernels matters or any fresh start would do.
    """

    def __init__(self, *, model: nn.Module, stats: ChannelStatistics | None = None,
                 channel_layers: Sequence[int | str] = (0,),
                 spatial_layers: Sequence[int | str] = (0,), alpha: float = 0.0,
                 beta: float = 0.0, grad_mode: str = "abs", second_term: str = "all",
                 noise_draws: int = 1, noise_delta: float = 0.0, expand_px: int = 0,
                 num_classes: int | None = None, gamma: float = 0.0,
                 kernel_layers: Sequence[int | str] = (-1,), kernel_tau: float = 0.5,
                 annotated: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 kernel_reinit: bool = False, reinit_random: bool = False):
        self.model = model
        self.alpha, self.beta = alpha, beta
        self.grad_mode, self.second_term = grad_mode, second_term
        self.noise_draws, self.noise_delta = noise_draws, noise_delta
        self.expand_px = expand_px
        self.grad_scale = 1024.0      # fp16 autocast only, see _gradients
        self._shared = None           # (split, m, live) of the last forward, see forward()
        self.channel_layers = [n for n, _ in load_modules(model, list(channel_layers))] \
            if alpha > 0 else []
        self.spatial_layers = [n for n, _ in load_modules(model, list(spatial_layers))] \
            if beta > 0 else []
        self.gamma, self.kernel_tau, self.annotated = gamma, kernel_tau, annotated
        self.kernel_layers = [n for n, _ in load_modules(model, list(kernel_layers))] \
            if gamma > 0 else []
        if self.kernel_layers and annotated is None:
            raise ValueError("gamma > 0 needs annotated images (--mask_dir)")
        if kernel_reinit and not self.kernel_layers:
            raise ValueError("--kernel_reinit re-initialises the background kernels: it needs "
                             "--gamma > 0")
        if reinit_random and not kernel_reinit:
            raise ValueError("--kernel_reinit_random is a control for --kernel_reinit: give both")
        self.kernel_reinit, self.reinit_random = kernel_reinit, reinit_random
        self.kernels: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        if self.channel_layers:
            if stats is None:
                raise ValueError("alpha > 0 needs channel statistics (--grad_dir)")
            stats.check_model(model, self.channel_layers, num_classes or stats.num_classes)
            self.masks = {n: stats.mask(n) for n in self.channel_layers}
        layers = list(dict.fromkeys(self.channel_layers + self.spatial_layers +
                                    self.kernel_layers))
        self.hooks = FeatureHooks(model, layers) if layers else None

    def find_kernels(self, chunk: int = 256) -> dict[str, torch.Tensor]:
        """``{layer: [K] float in {0, 1}}``: the background kernels of each kernel layer, from
        the annotated images with the model in eval mode (its mode is restored).

        Under DDP every rank holds all annotated images and the same weights, but its BN
        running statistics drift from the other ranks' between DDP's buffer broadcasts, so
        the eval-mode gradients (hence the threshold) may differ slightly: rank 0's kernels
        are broadcast, and every rank suppresses the same ones."""
        images, labels, masks = self.annotated
        device = next(self.model.parameters()).device
        num = {n: 0.0 for n in self.kernel_layers}
        den = {n: 0.0 for n in self.kernel_layers}
        self.hooks.enabled = False
        try:
            with eval_mode(self.model):
                for i in range(0, len(images), chunk):
                    x = images[i:i + chunk].to(device)
                    y = labels[i:i + chunk].to(device)
                    bg = background_weights(masks[i:i + chunk].to(device),
                                            torch.ones(len(x), dtype=torch.bool, device=device),
                                            self.expand_px)
                    grads = layer_gradients(self.model, x, y, self.kernel_layers)
                    for n, g in grads.items():
                        on_background, total = background_mass(g[0], bg)
                        num[n] = num[n] + on_background
                        den[n] = den[n] + total
        finally:
            self.hooks.enabled = True
        self.kernels = {n: (num[n] / den[n].clamp_min(1e-30) > self.kernel_tau).float()
                        for n in self.kernel_layers}
        if dist.is_available() and dist.is_initialized():
            for k in self.kernels.values():
                dist.broadcast(k, src=0)
        return self.kernels

    def start_epoch(self, epoch: int) -> dict:
        """Called by ``train.fit`` before each epoch: re-find the background kernels (the
        network may have moved the shortcut to other kernels). Returns numbers to log."""
        if not self.kernel_layers:
            return {}
        kernels = self.find_kernels()
        if self.kernel_reinit and epoch == 1:    # a resumed run has them in its checkpoint
            self.reinit_kernels(random_like(kernels) if self.reinit_random else kernels)
        return {f"kernels/{n}": int(k.sum()) for n, k in kernels.items()}

    @torch.no_grad()
    def reinit_kernels(self, kernels: dict[str, torch.Tensor]) -> None:
        """Fresh Kaiming-normal (fan-out) weights, bias 0, for the kernels marked 1 in
        ``kernels`` (``{conv layer: [K]}``); the other kernels keep theirs."""
        modules = dict(self.model.named_modules())
        for name, marked in kernels.items():
            conv, idx = modules[name], marked.bool().to(modules[name].weight.device)
            fresh = torch.empty_like(conv.weight)
            nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu")
            conv.weight[idx] = fresh[idx]
            if conv.bias is not None:
                conv.bias[idx] = 0

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The training forward (``train.train_one_epoch`` calls it instead of ``model``).

        With noisy gradients on one layer that :mod:`core.tail` can split, the network runs as
        head + tail and the head's output is kept, so the J noisy copies reuse it instead of
        running the head again. Otherwise (no noise, several layers, a DDP wrapper, no
        split) it is ``model(images)``.
        """
        self._shared = None
        if self.noisy and self.hooks is not None and len(self.hooks.names) == 1 \
                and model is self.model:
            split = split_or_none(self.model, self.hooks.names[0])
            if split is not None:
                try:
                    m, live = split.head(images)
                except SplitError:
                    return model(images)
                self._shared = (split, m, live)
                return split.tail(m, live)
        return model(images)

    @property
    def noisy(self) -> bool:
        return self.noise_delta > 0 or self.noise_draws > 1

    def _gradients(self, images, labels, second, logits):
        """``{layer: (grads_true, grads_second or None)}``, each ``[J, B, K, H, W]``, with
        ``create_graph=True`` (:func:`core.gradients.layer_gradients`; fp16 maps are
        differentiated with ``grad_scale``); ``grads_second`` for channel layers only.

        Without noise they come from the training forward the hooks recorded. With noise each
        layer gets J noisy copies, reusing the training forward's head if :meth:`forward`
        kept it. Also in train mode: the head's BN batch statistics over B equal those over J
        identical copies (mean and biased variance ignore replication), so only stochastic
        layers before the conv (dropout, stochastic depth) change: their one mask is shared
        by the J draws, which then differ by σ alone, as in Eq. 4.
        """
        layers = self.hooks.names
        common = dict(create_graph=True, fp16_scale=self.grad_scale)
        classes, wanted = (labels, second), (layers, self.channel_layers)
        if not self.noisy:
            g_true, g_second = layer_gradients(self.model, images, classes, wanted,
                                               recorded=(logits, self.hooks.features), **common)
        else:
            self.hooks.enabled = False
            try:
                g_true, g_second = layer_gradients(
                    self.model, images, classes, wanted, draws=self.noise_draws,
                    delta=self.noise_delta, head=self._shared, **common)
            finally:
                self.hooks.enabled = True
        return {n: (g_true[n], g_second.get(n)) for n in layers}

    def __call__(self, batch: PlainBatch | Batch, images: torch.Tensor, labels: torch.Tensor,
                 logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.hooks is None:
            return logits.new_zeros(()), {}
        second = second_class(logits, labels)
        grads = self._gradients(images, labels, second, logits)
        total = logits.new_zeros(())
        terms = {}
        if self.channel_layers:
            l_ch = sum(channel_loss(grads[n][0], grads[n][1], self.masks[n].to(logits.device),
                                    labels, second, self.grad_mode, self.second_term)
                       for n in self.channel_layers)
            total = total + self.alpha * l_ch
            terms["channel"] = l_ch.item()
        if self.kernel_layers:
            if not self.kernels:
                self.find_kernels()
            l_k = sum(kernel_loss(grads[n][0], self.kernels[n].to(logits.device))
                      for n in self.kernel_layers)
            total = total + self.gamma * l_k
            terms["kernel"] = l_k.item()
        if self.spatial_layers:
            masks, annotated = batch_masks(batch, images.device, "beta > 0")
            bg = background_weights(masks, annotated, self.expand_px)
            l_sp = sum(spatial_loss(grads[n][0], bg) for n in self.spatial_layers)
            total = total + self.beta * l_sp
            terms["spatial"] = l_sp.item()
            terms["annotated"] = float(annotated.float().mean())
        self.hooks.clear()
        self._shared = None
        return total, terms

    def remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()
