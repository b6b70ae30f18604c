"""Baseline: "right for the right reasons" (Ross, Hughes and Doshi-Velez, IJCAI 2017).

Not part of Model Doctor: the input-gradient penalty the shortcut benchmark compares with.
For an image with background ``A`` (1 = irrelevant pixel)::

    L_rrr = Σ_{c,h,w} ( A ⊙ ∂/∂x Σ_k log p_k(x) )²

averaged over the batch; images without a mask contribute 0. It is a term of
:class:`core.grad_constraint.DoctorLoss` (:class:`RightReasonsTerm`), alone or beside Model
Doctor's constraints on the same batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.grad_constraint import StepContext, Term, background_weights
from loaders import batch_masks


def right_reasons_loss(logits: torch.Tensor, images: torch.Tensor,
                       background: torch.Tensor) -> torch.Tensor:
    """Ross et al.'s penalty, averaged over the batch.

    Args:
        logits: ``[B, C]`` computed from ``images`` (which must require grad).
        images: ``[B, ch, H, W]`` network input.
        background: ``[B, 1, H, W]`` weights ``A`` (0 for unannotated images).
    Returns:
        scalar tensor, differentiable w.r.t. the weights (``create_graph=True``).
    """
    log_probs = F.log_softmax(logits.float(), dim=1).sum()
    grads, = torch.autograd.grad(log_probs, images, create_graph=True)
    return ((background.to(grads.dtype) * grads) ** 2).sum(dim=(1, 2, 3)).mean()


class RightReasonsTerm(Term):
    """:func:`right_reasons_loss` of the training forward; the batch must carry masks (a
    :class:`loaders.Batch`), and :class:`core.grad_constraint.DoctorLoss` runs the forward on
    images that require grad. ``expand_px`` grows the object before the background is taken,
    as ``--expand_px`` does for Model Doctor's spatial constraint. Logs the share of
    annotated images in the batch as ``annotated``."""
    name = "right_reasons"
    needs_input_grad = True

    def __init__(self, weight: float, expand_px: int = 0):
        if weight <= 0:
            raise ValueError(f"the right-reasons weight must be positive, got {weight}")
        super().__init__(weight)
        self.expand_px = expand_px

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        masks, annotated = batch_masks(ctx.batch, ctx.images.device,
                                       "the right-reasons baseline")
        ctx.logs["annotated"] = float(annotated.float().mean())
        return right_reasons_loss(ctx.logits, ctx.images,
                                  background_weights(masks, annotated, self.expand_px))

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        return cls(args.rrr_lambda, args.expand_px) if args.rrr_lambda > 0 else None
