"""What the datasets and loaders yield: named tuples, read by field name, never by position.

A sample (or a collated batch) of a dataset with masks is a :class:`Batch`; without masks it
is the shorter :class:`PlainBatch` — there is no mask to fill in, and code that needs masks
asks for them through :func:`batch_masks`, which names the missing flag (the one check that
masks are there: :func:`require_masks`). Collating keeps the
type (``torch.utils.data.default_collate`` rebuilds named tuples field by field), so a
``DataLoader`` and :class:`loaders.memory.MemoryLoader` yield the same types.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class PlainBatch(NamedTuple):
    """An image (``[C, H, W]``, or ``[B, C, H, W]`` collated), its label (int, or ``[B]``)
    and its path ``"<class>/<file>"`` (or a list of them)."""
    image: torch.Tensor
    label: int | torch.Tensor
    path: str | list[str]


class Batch(NamedTuple):
    """:class:`PlainBatch` plus the mask and whether it is a real one.

    ``mask``: ``[1, H, W]`` (``[B, 1, H, W]``) float codes ``MASK_OBJECT`` /
    ``MASK_BACKGROUND`` / ``MASK_IGNORE`` (:func:`loaders.decode_mask`), all zero for an image
    without a mask file; ``annotated``: bool (``[B]``), False for those images.
    """
    image: torch.Tensor
    label: int | torch.Tensor
    path: str | list[str]
    mask: torch.Tensor
    annotated: bool | torch.Tensor


def require_masks(present: bool, needs: str) -> None:
    """A ValueError saying that ``needs`` (e.g. ``"beta > 0"``) needs masks and how to give
    them, unless they are ``present``."""
    if not present:
        raise ValueError(f"{needs} needs masks: give --mask_dir")


def batch_masks(batch: PlainBatch | Batch, device: torch.device,
                needs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask [B, 1, H, W], annotated [B] bool)`` of a collated ``batch`` on ``device``.

    A batch without masks is an error naming ``needs`` (:func:`require_masks`).
    """
    require_masks(isinstance(batch, Batch), needs)
    return (batch.mask.to(device, non_blocking=True),
            torch.as_tensor(batch.annotated, device=device).bool())
