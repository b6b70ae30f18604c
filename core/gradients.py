"""Per-sample gradients of class scores w.r.t. conv feature maps, ``g = ∂y_n / ∂m`` (paper
Eq. 3-7), with or without noise at the map (paper Eq. 4).

:func:`layer_gradients` is the one place they are computed: the channel statistics, the
treatment losses, the background kernels and the figures all call it. The gradients of a
batch come from one backward pass of ``Σ_b y[b, n_b]``, so they are per-sample when samples
do not interact (eval mode: :func:`eval_mode`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from core.hooks import FeatureHooks
from core.tail import TailSplit, noisy_forward
from models import load_modules

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode; every submodule's train/eval flag is put
    back afterwards, also when the body raises."""
    flags = [(m, m.training) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)          # through any train() override, then exactly:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Normalisation layers keep using batch statistics in train mode but do not update
    their running statistics (nor ``num_batches_tracked``); eval mode is unaffected.

    The extra passes of :func:`layer_gradients` (J·B noisy copies in the treatment) must not
    move them: only the training forward on the clean batch may.
    """
    norms = [m for m in model.modules()
             if getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None)
             is not None]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def layer_gradients(model: nn.Module, images: torch.Tensor,
                    classes: torch.Tensor | Sequence[torch.Tensor],
                    layers: Sequence[int | str] | Sequence[Sequence[int | str]], *,
                    draws: int = 1, delta: float = 0.0, create_graph: bool = False,
                    fp16_scale: float = 1024.0,
                    recorded: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None,
                    head: tuple[TailSplit, torch.Tensor, tuple] | None = None,
                    with_outputs: bool = False):
    """Per-sample ``∂y_n/∂m`` (or ``∂y_n/∂(m + σ_j)``) at conv layers, ``n`` given per image.

    Without noise (``draws == 1`` and ``delta == 0``) one forward pass serves every layer.
    Otherwise each layer gets its own pass, so that the noise sits at that layer only, over
    J·B copies with ``σ_j ~ U[-δ, δ]`` (:func:`core.hooks.feature_noise`) added to its output:
    the network up to the layer runs once on the B images and the rest on the J·B noisy maps
    (:mod:`core.tail`), or, for a model that cannot be split there, the whole network runs
    on J·B copies of the images with the noise added by a forward hook. The passes run here
    never move normalisation running statistics (:func:`frozen_running_stats`); the model's
    train/eval mode is used as it is.

    Args:
        model: the network.
        images: ``[B, ...]``.
        classes: ``[B]`` class ``n_b`` of each image, or a sequence of such vectors (e.g. the
            true and the second class of the channel constraint); they share the forward
            passes, each gets its own backward pass.
        layers: conv layers by name or index from the last conv
            (:func:`models.load_modules`); with several class vectors, either one list for
            all of them or one list per vector (the layers its gradient is wanted at).
        draws / delta: J and δ.
        create_graph: keep the graph of the gradients, so that a loss of them trains the
            weights (the head of a tail split then runs with autograd too).
        fp16_scale: if the maps are fp16 (autocast), the scores are multiplied by this
            before differentiating (so small gradients do not flush to zero) and the
            gradients divided by it in float32 (so sums over many positions do not
            overflow). fp16 and bf16 gradients are returned as float32.
        recorded: ``(logits [B, C], {name: m [B, K, H, W]})`` of a noiseless forward already
            run with the maps recorded (:class:`core.hooks.FeatureHooks`, e.g. the training
            forward): the gradients are taken from it and no pass is run. No noise.
        head: ``(split, m, live)`` — the head of a :class:`core.tail.TailSplit` already run
            on ``images`` (the training forward): the noisy copies at ``split.layer`` reuse it.
        with_outputs: also return the noiseless pass's logits ``[B, C]`` and maps
            ``{name: [B, K, H, W]}``, detached. No noise.

    Returns:
        ``{name: [J, B, K, H, W]}`` (copy ``j`` of image ``b`` at ``[j, b]``; ``J = 1``
        without noise) for one class vector; for a sequence, a list of such dicts, one per
        vector, each holding its layers. With ``with_outputs``: ``(grads, logits, maps)``.
    """
    single = isinstance(classes, torch.Tensor)
    class_list = [classes] if single else list(classes)
    wanted = _layers_per_class(model, layers, len(class_list))
    names = list(dict.fromkeys(n for group in wanted for n in group))
    noisy = draws > 1 or delta > 0
    if noisy and (recorded is not None or with_outputs):
        raise ValueError("layer_gradients: recorded and with_outputs need a noiseless pass "
                         f"(draws=1, delta=0), got draws={draws}, delta={delta}")
    out: list[dict[str, torch.Tensor]] = [{} for _ in class_list]
    with torch.enable_grad():
        if not noisy:
            if recorded is not None:
                logits, maps = recorded
                maps = {n: maps[n] for n in names}
            else:
                with frozen_running_stats(model), FeatureHooks(model, names) as hooks:
                    logits = model(images)
                    maps = {n: hooks.features[n] for n in names}
            _backward(logits, maps, class_list, wanted, 1, create_graph, fp16_scale, out)
        else:
            repeated = [c.repeat(draws) for c in class_list]
            for name in names:
                with frozen_running_stats(model):
                    logits, z = _noisy_pass(model, name, images, draws, delta, create_graph,
                                            head)
                _backward(logits, {name: z}, repeated, wanted, draws, create_graph,
                          fp16_scale, out)
    grads = out[0] if single else out
    if with_outputs:
        return grads, logits.detach(), {n: m.detach() for n, m in maps.items()}
    return grads


def _layers_per_class(model: nn.Module, layers, count: int) -> list[list[str]]:
    """Module names of the layers each of ``count`` class vectors wants."""
    per_class = bool(layers) and all(isinstance(group, (list, tuple)) for group in layers)
    if per_class and len(layers) != count:
        raise ValueError(f"layer_gradients: {len(layers)} layer lists for {count} class "
                         f"vectors (give one list per vector, or one list for all)")
    groups = list(layers) if per_class else [layers] * count
    return [[n for n, _ in load_modules(model, list(group))] for group in groups]


def _noisy_pass(model: nn.Module, name: str, images: torch.Tensor, draws: int, delta: float,
                head_grad: bool, head) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[J·B, C]`` of J noisy copies at layer ``name`` and the maps ``z`` they were
    run from, draw-major: the tail split if there is one, else the whole network."""
    if head is not None and head[0].layer == name:
        split, m, live = head
        return split.noisy_tail(m, live, draws, delta)
    tail = noisy_forward(model, name, images, draws, delta, head_grad=head_grad)
    if tail is not None:
        return tail
    with FeatureHooks(model, [name], noise_delta=delta) as hooks:
        logits = model(images.repeat(draws, *([1] * (images.dim() - 1))))
        return logits, hooks.features[name]


def _backward(logits: torch.Tensor, maps: dict[str, torch.Tensor],
              classes: list[torch.Tensor], wanted: list[list[str]], draws: int,
              create_graph: bool, fp16_scale: float, out: list[dict]) -> None:
    """One ``autograd.grad`` of ``Σ_b score[b, n_b]`` per class vector, w.r.t. the maps of
    its layers among ``maps``; results, ``[J, B, K, H, W]``, added to ``out``."""
    scale = fp16_scale if next(iter(maps.values())).dtype == torch.float16 else 1.0
    score = _upcast(logits)
    if scale != 1.0:
        score = score * scale
    jobs = [(i, [n for n in group if n in maps]) for i, group in enumerate(wanted)]
    jobs = [(i, group) for i, group in jobs if group]
    for k, (i, group) in enumerate(jobs):
        got = torch.autograd.grad(score.gather(1, classes[i][:, None]).sum(),
                                  [maps[n] for n in group], create_graph=create_graph,
                                  retain_graph=create_graph or k < len(jobs) - 1)
        for n, g in zip(group, got):
            g = _upcast(g)
            if scale != 1.0:
                g = g / scale
            out[i][n] = g.view(draws, -1, *g.shape[1:])


def _upcast(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _LOW_PRECISION else t
