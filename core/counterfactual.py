"""Counterfactual background swaps of the annotated images (not in the paper).

A model that took a background shortcut reads the label from the background. The masks say
where the object is, so each annotated image ``i`` of a batch is also shown on the background
of another annotated image ``j``, still labelled ``y_i`` — ``j`` of **another** class
(``--swap_partners other``) or of any class (``any``: the background is then independent of
the label, as in a decorrelated test set)::

    x̃_i = K_i ⊙ x_i + Bg_i ⊙ (Bg_j ⊙ x_j + (1 − Bg_j) ⊙ μ_j)

``Bg`` the background weights of :func:`core.grad_constraint.background_weights` (1 on the
background, 0 on the object grown by ``expand_px`` and on ``__ignore__`` pixels), ``K = 1 − Bg``
the part kept from ``x_i``, and ``μ_j`` the per-channel mean of ``x_j`` over its background:
where ``j``'s own object falls outside ``K_i``, the hole is filled with ``j``'s mean background,
so no part of another class's object enters the composite. On those images the background
(and any decoy painted in it) no longer predicts the label: with ``other`` it points to a
wrong class, with ``any`` it is independent of the class.
The term is ``L_swap = CE(f(x̃), y)`` over the composites, added as
``swap_lambda · L_swap`` to the batch's cross-entropy.

Where the composite is built: on the batch's device, from the images and masks exactly as the
loader gives them — normalised, and after the training augmentation, the masks cropped and
flipped with their images. The loader's normalisation ``(v − mean_c) / std_c`` is an affine
map per channel, so it commutes with the per-pixel blend (its weights sum to 1) and with the
background mean: compositing the normalised images equals normalising the composite of the
raw images. The crop's zero padding is background in the mask and in the image (raw 0), so it
counts as background in ``μ_j`` and is swapped like the rest of the background.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from core.grad_constraint import StepContext, Term, background_weights
from loaders import batch_masks


SWAP_PARTNERS = ("other", "any")   # whose background: another class's image, any image's


def draw_partners(labels: torch.Tensor, generator: torch.Generator | None = None,
                  rule: str = "other") -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, a partner drawn uniformly among the images of another class
    (``rule="other"``) or among all the other images (``"any"``).

    Args:
        labels: ``[n]`` classes of the annotated images.
        generator: the CPU generator of the draws (the global RNG if None).
        rule: ``other`` or ``any``.
    Returns:
        ``(partner [n] long, has_partner [n] bool)`` on ``labels``' device; an image with no
        allowed partner (``other``: its class is the only one present; ``any``: it is alone)
        has none (its ``partner`` entry is its own index, to be ignored).
    """
    if rule not in SWAP_PARTNERS:
        raise ValueError(f"swap partners: 'other' or 'any', got {rule!r}")
    y = labels.detach().cpu()
    if rule == "other":
        other = y[:, None] != y[None, :]                               # [n, n]
    else:
        other = ~torch.eye(len(y), dtype=torch.bool)
    # the argmax of i.i.d. uniforms over the allowed set is uniform on that set
    score = torch.rand(other.shape, generator=generator).masked_fill(~other, -1.0)
    partner = torch.where(other.any(dim=1), score.argmax(dim=1), torch.arange(len(y)))
    return partner.to(labels.device), other.any(dim=1).to(labels.device)


def mean_background(images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``μ``: the per-channel mean of each image over its background, ``[B, C, 1, 1]``.

    Args:
        images: ``[B, C, H, W]``; background: ``[B, 1, H, W]`` weights in [0, 1].
    An image without background gets 0 (in normalised space: the data set's mean colour).
    """
    w = background.to(images.dtype)
    area = w.sum(dim=(2, 3), keepdim=True)
    return (images * w).sum(dim=(2, 3), keepdim=True) / area.clamp_min(1e-12) * (area > 0)


def swap_backgrounds(images: torch.Tensor, masks: torch.Tensor, partner: torch.Tensor,
                     expand_px: int = 0) -> torch.Tensor:
    """The composites ``x̃_i = K_i ⊙ x_i + Bg_i ⊙ (Bg_j ⊙ x_j + (1 − Bg_j) ⊙ μ_j)``,
    ``j = partner[i]`` (module docstring).

    Args:
        images: ``[n, C, H, W]`` annotated images (any affine per-channel normalisation).
        masks: ``[n, 1, H, W]`` their masks in the loader's codes (``loaders.decode_mask``).
        partner: ``[n]`` long, the image whose background each one receives.
        expand_px: the object is grown by this many pixels before the background is taken
            (``--expand_px``), in both ``i`` and ``j``.
    Returns:
        ``[n, C, H, W]`` composites (differentiable w.r.t. ``images``).
    """
    everyone = torch.ones(len(images), dtype=torch.bool, device=images.device)
    bg = background_weights(masks, everyone, expand_px).to(images.dtype)   # [n, 1, H, W]
    filled = bg * images + (1 - bg) * mean_background(images, bg)         # j's object removed
    return (1 - bg) * images + bg * filled[partner]


class CounterfactualTerm(Term):
    """``CE(f(x̃), y)`` on background swaps (:func:`swap_backgrounds`) of annotated images,
    each with a partner of another class, or of any class with ``partners="any"``
    (:func:`draw_partners`). The images: with ``bank`` (all annotated images, evaluation
    view; ``--replay_annotated 0``) ``per_step`` drawn at each step; without it (with
    ``--replay_annotated k``) the batch's annotated images, the ``k`` replayed ones and any
    the batch's own part drew. Replay also puts the plain annotated images into the batch's
    cross-entropy ``k`` times per step; the bank does not.

    The composites run through ``model`` in its current (training) mode, a second forward
    beside the batch's (BatchNorm takes their batch statistics). Images whose class is the
    only one among the batch's annotated images get no composite; a batch without two classes
    there gives 0. The partners are drawn from a generator seeded by ``(seed, epoch, rank)``
    at each :meth:`start_epoch`, so a run (and a resumed one) draws the same partners. Logs the
    number of composites of the step as ``swapped``.

    Args:
        model: the classifier being treated (the bare model, also under DDP).
        weight: ``swap_lambda``.
        seed: the run's seed.
        expand_px: the object's expansion before the background is taken (``--expand_px``).
        partners: ``other`` or ``any`` (``--swap_partners``).
        bank: ``(images, labels, masks)`` of all annotated images, or None.
        per_step: images drawn from ``bank`` per step (``--swap_batch``).
    """
    name = "swap"

    def __init__(self, model: nn.Module, weight: float, seed: int = 0, expand_px: int = 0,
                 partners: str = "other", bank: tuple[torch.Tensor, ...] | None = None,
                 per_step: int = 32):
        if weight <= 0:
            raise ValueError(f"the swap weight must be positive, got {weight}")
        if bank is not None and (per_step < 2 or len(bank[1]) < 2):
            raise ValueError(f"swaps from the annotated images need at least 2 of them per "
                             f"step (--swap_batch {per_step}, {len(bank[1])} annotated)")
        super().__init__(weight)
        self.model, self.seed, self.expand_px = model, seed, expand_px
        self.partners, self.bank, self.per_step = partners, bank, per_step
        self.generator = torch.Generator()
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> dict:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.generator.manual_seed(((self.seed * 100003 + epoch) * 1009 + rank) * 7 + 3)
        return {}

    def draw(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, masks, labels)`` to swap: ``per_step`` drawn from the bank, else the
        batch's annotated images."""
        device = ctx.images.device
        if self.bank is not None:
            images, labels, masks = self.bank
            pick = torch.randperm(len(labels), generator=self.generator)[:self.per_step]
            return (images[pick].to(device), masks[pick].to(device), labels[pick].to(device))
        masks, annotated = batch_masks(ctx.batch, device, "--swap_lambda > 0")
        index = annotated.nonzero().squeeze(1)
        # the composites are data: no gradient flows back into the batch's images
        return ctx.images[index].detach(), masks[index], ctx.labels[index]

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        images, masks, labels = self.draw(ctx)
        partner, has = draw_partners(labels, self.generator, self.partners)
        ctx.logs["swapped"] = float(has.sum())
        if not bool(has.any()):
            return ctx.logits.new_zeros(())
        composites = swap_backgrounds(images, masks, partner, self.expand_px)
        return F.cross_entropy(self.model(composites[has]).float(), labels[has])

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        if args.swap_lambda <= 0:
            return None
        if args.replay_annotated > 0:     # the replayed images of each batch
            return cls(model, args.swap_lambda, args.seed, args.expand_px, args.swap_partners)
        if annotated is None:
            raise ValueError("--swap_lambda > 0 needs annotated images (--mask_dir)")
        # without replay: --swap_batch annotated images drawn per step from all of them (no
        # cross-entropy on the plain annotated images beyond the batch's own)
        return cls(model, args.swap_lambda, args.seed, args.expand_px, args.swap_partners,
                   bank=annotated, per_step=args.swap_batch)
