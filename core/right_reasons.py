"""Baseline: "right for the right reasons" (Ross, Hughes and Doshi-Velez, IJCAI 2017).

Not part of Model Doctor: the input-gradient penalty the shortcut benchmark compares with.
For an image with background ``A`` (1 = irrelevant pixel)::

    L_rrr = Σ_{c,h,w} ( A ⊙ ∂/∂x Σ_k log p_k(x) )²

averaged over the batch; images without a mask contribute 0. It plugs into ``train.fit`` as
``extra_loss`` like :class:`core.grad_constraint.DoctorLoss`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.extra_loss import ExtraLoss
from core.grad_constraint import background_weights
from loaders import Batch, PlainBatch, batch_masks


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


class RightReasonsLoss(ExtraLoss):
    """``lam · L_rrr`` as an ``extra_loss`` for ``train.fit``; the batch must carry masks
    (a :class:`loaders.Batch`). :meth:`forward` makes the images require grad and keeps
    them for the input gradient. ``expand_px`` grows the object before the background is
    taken, as ``--expand_px`` does for Model Doctor's spatial constraint."""

    def __init__(self, lam: float, expand_px: int = 0):
        if lam <= 0:
            raise ValueError(f"the right-reasons weight must be positive, got {lam}")
        self.lam, self.expand_px = lam, expand_px

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        self._images = images.requires_grad_(True)
        return model(self._images)

    def __call__(self, batch: PlainBatch | Batch, images: torch.Tensor, labels: torch.Tensor,
                 logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        masks, annotated = batch_masks(batch, images.device, "the right-reasons baseline")
        loss = right_reasons_loss(logits, self._images,
                                  background_weights(masks, annotated, self.expand_px))
        return self.lam * loss, {"right_reasons": loss.item(),
                                 "annotated": float(annotated.float().mean())}

    def remove(self) -> None:
        self._images = None


class WithRightReasons(ExtraLoss):
    """``DoctorLoss`` + ``RightReasonsLoss`` on the same batch: the input-gradient penalty of
    the annotated images beside Model Doctor's (or the background-kernel) constraints.

    The training forward is the right-reasons one (the images require grad); the doctor's
    hooks record the features of that same forward, so its noiseless constraints reuse it
    (with noise it runs its own noisy passes, as it does under DDP).
    """

    def __init__(self, doctor, rrr: RightReasonsLoss):
        self.doctor, self.rrr = doctor, rrr

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.rrr.forward(model, images)

    def start_epoch(self, epoch: int) -> dict:
        return self.doctor.start_epoch(epoch)

    def __call__(self, batch, images, labels, logits) -> tuple[torch.Tensor, dict]:
        loss_d, terms_d = self.doctor(batch, images, labels, logits)
        loss_r, terms_r = self.rrr(batch, images, labels, logits)
        return loss_d + loss_r, {**terms_d, **terms_r}

    def remove(self) -> None:
        self.doctor.remove()
        self.rrr.remove()
