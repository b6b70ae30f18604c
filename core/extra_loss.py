"""The interface of a loss that ``train.fit`` adds to the cross-entropy (``extra_loss``).

``train.train_one_epoch`` calls, for every batch::

    logits = extra_loss.forward(model, images)                  # the training forward
    loss, terms = extra_loss(batch, images, labels, logits)     # added to the cross-entropy

and ``train.fit`` calls ``extra_loss.start_epoch(epoch)`` before each epoch. An extra loss
owns whatever it registers on the model (hooks) and releases it in :meth:`ExtraLoss.remove`,
also when used as a context manager: ``with DoctorLoss(...) as loss: fit(...)``.
"""
from __future__ import annotations

import abc

import torch
import torch.nn as nn

from loaders.batch import Batch, PlainBatch


class ExtraLoss(abc.ABC):
    """Base of :class:`core.grad_constraint.DoctorLoss` (the treatment's terms, Ross et al.'s
    baseline among them); only :meth:`__call__` must be written."""

    def forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The training forward, ``[B, C]`` logits (a loss may keep intermediate results for
        :meth:`__call__`). Default: ``model(images)``."""
        return model(images)

    @abc.abstractmethod
    def __call__(self, batch: PlainBatch | Batch, images: torch.Tensor, labels: torch.Tensor,
                 logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(loss, terms)``: a scalar tensor added to the cross-entropy, and ``{name:
        float}`` to log. ``images``/``labels`` are ``batch.image``/``batch.label`` on the
        device; ``logits`` come from :meth:`forward`."""

    def start_epoch(self, epoch: int) -> dict:
        """Called before each epoch; returns numbers to log with it. Default: nothing."""
        return {}

    def remove(self) -> None:
        """Release what the loss registered on the model; safe to call twice. Default:
        nothing to release."""

    def __enter__(self) -> "ExtraLoss":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
