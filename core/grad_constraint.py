"""Treatment: the channel-wise (paper Eq. 5) and spatial (Eq. 6) constraints, as terms of
:class:`DoctorLoss`.

A treatment step takes the per-sample gradients ``∂y/∂m`` at the conv layers once
(:func:`core.gradients.layer_gradients`, with ``create_graph=True`` so the penalties train
the weights) and hands them to independent :class:`Term` s; :class:`DoctorLoss` returns
``Σ_t weight_t · L_t`` and plugs into ``train.train_one_epoch`` as ``extra_loss``
(:class:`core.extra_loss.ExtraLoss`). The paper's terms are here (:class:`ChannelTerm`,
:class:`SpatialTerm`); the background-kernel constraint is in :mod:`core.kernels`, Ross et
al.'s baseline in :mod:`core.right_reasons`, and :mod:`core.terms` builds the active terms
from the command line.

The losses are pure functions of per-sample gradients. Scale (README, "Method: choices and
differences from the released code"): per-sample penalties are averaged over the batch, so
the loss does not depend on the batch size. The released channel loss equals ours divided
by the batch size ``B``: its ``alpha = 10`` at ``B = 128`` is ``alpha ≈ 0.078`` here. The
spatial loss has the released scale (``beta`` carries over).
"""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.channel_stats import ChannelStatistics, rectify
from core.extra_loss import ExtraLoss
from core.gradients import layer_gradients
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


def parse_layers(layers: str | Sequence[int | str]) -> list[int | str]:
    """``"0,-1"`` (a comma-separated flag) or a sequence → the list of layers it names."""
    if isinstance(layers, str):
        return [t.strip() for t in layers.split(",") if t.strip()]
    return list(layers)


def layer_names(model: nn.Module, layers: str | Sequence[int | str]) -> list[str]:
    """Module names of conv layers given by name or index from the last conv."""
    return [n for n, _ in load_modules(model, parse_layers(layers))]


# ------------------------------------------------------------------ terms and DoctorLoss

@dataclass
class StepContext:
    """What a term sees of one training step.

    ``grads_true[name]`` is ``∂y_n/∂m`` and ``grads_second[name]`` ``∂y_s/∂m`` (``s`` the
    competing class, :func:`second_class`), each ``[J, B, K, H, W]`` with the graph kept;
    ``images`` require grad when a term asked for it; ``second`` is ``None`` when no term
    needs it. A term may add numbers to ``logs``.
    """
    batch: PlainBatch | Batch
    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    second: torch.Tensor | None
    grads_true: dict[str, torch.Tensor]
    grads_second: dict[str, torch.Tensor]
    logs: dict[str, float] = field(default_factory=dict)


class Term(abc.ABC):
    """One term of the treatment: ``weight · L(step)``, ``L`` returned by :meth:`__call__`.

    Class attributes say what the term needs: ``name`` (its logged key), ``needs_second``
    (``∂y_s/∂m`` at its layers too), ``needs_input_grad`` (the training forward runs on
    images that require grad). ``layers`` (conv module names, set by the constructor) are
    where it needs ``∂y_n/∂m``; none for a term of the logits or the input only.
    """
    name: str = ""
    needs_second: bool = False
    needs_input_grad: bool = False

    def __init__(self, weight: float, layers: Sequence[str] = ()):
        self.weight = float(weight)
        self.layers = list(layers)

    @abc.abstractmethod
    def __call__(self, ctx: StepContext) -> torch.Tensor:
        """The unweighted loss of the step, a scalar tensor."""

    def start_epoch(self, epoch: int) -> dict:
        """Called before each epoch; returns numbers to log. Default: nothing."""
        return {}

    def remove(self) -> None:
        """Release what the term holds on the model (safe twice). Default: nothing."""

    @classmethod
    def from_args(cls, args, model: nn.Module, stats: ChannelStatistics | None,
                  annotated) -> "Term | None":
        """The term the parsed flags of ``train_model_doctor.py`` ask for, or ``None`` when
        its weight is 0 (:func:`core.terms.build_terms`)."""
        raise TypeError(f"{cls.__name__} has no command-line builder: register a term whose "
                        "from_args builds it (core.terms.register_term)")


class ChannelTerm(Term):
    """Paper Eq. 5 at ``layers`` (:func:`channel_loss`), summed over the layers.

    Args:
        model: the classifier; stats: its channel statistics (the masks ``M``).
        layers: conv layers (index from the last conv, or name).
        grad_mode: ``abs`` or ``relu``; second_term: ``all`` (paper) or ``mask`` (released).
        num_classes: checked against the statistics (default: theirs).
    """
    name = "channel"
    needs_second = True

    def __init__(self, model: nn.Module, stats: ChannelStatistics | None,
                 layers: str | Sequence[int | str] = (0,), weight: float = 1.0, *,
                 grad_mode: str = "abs", second_term: str = "all",
                 num_classes: int | None = None):
        if stats is None:
            raise ValueError("alpha > 0 needs channel statistics (--grad_dir)")
        if second_term not in SECOND_TERMS:
            raise ValueError(f"second_term must be one of {SECOND_TERMS}, got {second_term!r}")
        super().__init__(weight, layer_names(model, layers))
        self.grad_mode, self.second_term = grad_mode, second_term
        stats.check_model(model, self.layers, num_classes or stats.num_classes)
        self.masks = {n: stats.mask(n) for n in self.layers}

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return sum(channel_loss(ctx.grads_true[n], ctx.grads_second[n],
                                self.masks[n].to(ctx.logits.device), ctx.labels, ctx.second,
                                self.grad_mode, self.second_term) for n in self.layers)

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        if args.alpha <= 0:
            return None
        return cls(model, stats, args.channel_layers, args.alpha, grad_mode=args.grad_mode,
                   second_term=args.second_term, num_classes=args.num_classes)


class SpatialTerm(Term):
    """Paper Eq. 6 at ``layers`` (:func:`spatial_loss`), summed over the layers; the batch
    must carry masks. ``expand_px``: the mask expansion ``e`` at input resolution. Logs the
    share of annotated images in the batch as ``annotated``."""
    name = "spatial"

    def __init__(self, model: nn.Module, layers: str | Sequence[int | str] = (0,),
                 weight: float = 1.0, *, expand_px: int = 0):
        super().__init__(weight, layer_names(model, layers))
        self.expand_px = expand_px

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        masks, annotated = batch_masks(ctx.batch, ctx.images.device, "beta > 0")
        bg = background_weights(masks, annotated, self.expand_px)
        ctx.logs["annotated"] = float(annotated.float().mean())
        return sum(spatial_loss(ctx.grads_true[n], bg) for n in self.layers)

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        if args.beta <= 0:
            return None
        return cls(model, args.spatial_layers, args.beta, expand_px=args.expand_px)


class DoctorLoss(ExtraLoss):
    """``Σ_t weight_t · L_t`` over ``terms`` as an ``extra_loss`` for ``train.fit``; each
    term's unweighted value is logged under its ``name``.

    The per-sample gradients are taken once per step, at the union of the terms' layers
    (hooks registered here, removed by :meth:`remove` or on leaving ``with DoctorLoss(...)
    as loss:``), for the true class and, at the layers of terms that need it, the second.

    Args:
        terms: the :class:`Term` s (``core.terms.build_terms`` builds them from the flags).
        model: the classifier being treated (the bare model, also under DDP).
        noise_draws / noise_delta: J and δ of the gradients (paper Eq. 4); with noise, each
            layer gets its own forward pass of J noisy copies (J=1, δ=0 reuses the training
            forward).
        grad_scale: the fp16-autocast score scale (:func:`core.gradients.layer_gradients`).
    """

    def __init__(self, terms: Sequence[Term], *, model: nn.Module, noise_draws: int = 1,
                 noise_delta: float = 0.0, grad_scale: float = 1024.0):
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"DoctorLoss: two terms share a name: {names}")
        self.terms = list(terms)
        self.model = model
        self.noise_draws, self.noise_delta = noise_draws, noise_delta
        self.grad_scale = grad_scale
        self.layers = list(dict.fromkeys(n for t in self.terms for n in t.layers))
        self.second_layers = list(dict.fromkeys(n for t in self.terms if t.needs_second
                                                for n in t.layers))
        self.input_grad = any(t.needs_input_grad for t in self.terms)
        self._shared = None           # (split, m, live) of the last forward, see forward()
        self._inputs = None           # the images made to require grad, see forward()
        self.hooks = FeatureHooks(model, self.layers) if self.layers else None
        self.unchecked = {t.name for t in self.terms}   # see check_reaches_weights
        self.inert: list[str] = []

    def check_reaches_weights(self, term: Term, value: torch.Tensor) -> None:
        """Warn, once per term, when its first non-zero loss has no gradient w.r.t. the
        model's weights: the term then cannot change the model. It happens at a layer whose
        ``∂y/∂m`` is piecewise constant in the weights, e.g. a classifier conv followed by
        ReLU and average pooling (SqueezeNet's last conv, so its layer 0): ``∂y_n/∂m`` is then
        ``1[m > 0] / HW``. Costs one extra backward of that term, once."""
        if term.name not in self.unchecked or float(value.detach()) == 0:
            return
        self.unchecked.discard(term.name)
        params = [q for q in self.model.parameters() if q.requires_grad]
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True) \
            if value.requires_grad else [None] * len(params)
        if all(g is None or not bool(g.any()) for g in grads):
            self.inert.append(term.name)
            where = f" at {', '.join(term.layers)}" if term.layers else ""
            warnings.warn(f"the {term.name} term{where} has no gradient w.r.t. the weights: "
                          "it cannot change the model (e.g. a classifier conv followed by ReLU "
                          "and pooling, whose dy/dm is piecewise constant); constrain another "
                          "layer", RuntimeWarning, stacklevel=2)

    def term(self, name: str) -> Term:
        """The term called ``name``."""
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"no term {name!r}; terms: {[t.name for t in self.terms]}")

    def start_epoch(self, epoch: int) -> dict:
        """Each term's :meth:`Term.start_epoch`, with the hooks paused (a term may run its
        own passes, e.g. to find the background kernels)."""
        logs = {}
        if self.hooks is not None:
            self.hooks.enabled = False
        try:
            for t in self.terms:
                logs.update(t.start_epoch(epoch))
        finally:
            if self.hooks is not None:
                self.hooks.enabled = True
        return logs

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The training forward (``train.train_one_epoch`` calls it instead of ``model``).

        If a term needs the input gradient, the images are made to require grad. Else, with
        noisy gradients on one layer that :mod:`core.tail` can split, the network runs as
        head + tail and the head's output is kept, so the J noisy copies reuse it instead of
        running the head again. Otherwise (no noise, several layers, a DDP wrapper, no
        split) it is ``model(images)``.
        """
        self._shared = None
        self._inputs = None
        if self.input_grad:
            self._inputs = images.requires_grad_(True)
            return model(self._inputs)
        if self.noisy and len(self.layers) == 1 and model is self.model:
            split = split_or_none(self.model, self.layers[0])
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
        """``(grads_true, grads_second)``: ``{layer: [J, B, K, H, W]}`` with
        ``create_graph=True`` (:func:`core.gradients.layer_gradients`; fp16 maps are
        differentiated with ``grad_scale``); ``grads_second`` at :attr:`second_layers` only.

        Without noise they come from the training forward the hooks recorded. With noise each
        layer gets J noisy copies, reusing the training forward's head if :meth:`forward`
        kept it. Also in train mode: the head's BN batch statistics over B equal those over J
        identical copies (mean and biased variance ignore replication), so only stochastic
        layers before the conv (dropout, stochastic depth) change: their one mask is shared
        by the J draws, which then differ by σ alone, as in Eq. 4.
        """
        common = dict(create_graph=True, fp16_scale=self.grad_scale)
        classes, wanted = [labels], [self.layers]
        if self.second_layers:
            classes.append(second)
            wanted.append(self.second_layers)
        if not self.noisy:
            got = layer_gradients(self.model, images, classes, wanted,
                                  recorded=(logits, self.hooks.features), **common)
        else:
            self.hooks.enabled = False
            try:
                got = layer_gradients(self.model, images, classes, wanted,
                                      draws=self.noise_draws, delta=self.noise_delta,
                                      head=self._shared, **common)
            finally:
                self.hooks.enabled = True
        return got[0], (got[1] if self.second_layers else {})

    def __call__(self, batch: PlainBatch | Batch, images: torch.Tensor, labels: torch.Tensor,
                 logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if not self.terms:
            return logits.new_zeros(()), {}
        second = second_class(logits, labels) if self.second_layers else None
        try:
            grads_true, grads_second = self._gradients(images, labels, second, logits) \
                if self.layers else ({}, {})
            ctx = StepContext(batch, self._inputs if self._inputs is not None else images,
                              labels, logits, second, grads_true, grads_second)
            total, logs = logits.new_zeros(()), {}
            for t in self.terms:
                value = t(ctx)
                self.check_reaches_weights(t, value)
                total = total + t.weight * value
                logs[t.name] = value.item()
        finally:
            if self.hooks is not None:
                self.hooks.clear()
            self._shared = self._inputs = None
        return total, {**logs, **ctx.logs}

    def remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()
        for t in self.terms:
            t.remove()
