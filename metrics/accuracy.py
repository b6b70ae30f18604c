"""Top-k accuracy, confusion matrix and per-class accuracy."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                  ks: Sequence[int] = (1,)) -> list[float]:
    """Share of samples whose label is among the top-k logits, for each k.

    Args:
        logits: ``[B, C]``.
        labels: ``[B]`` integer class indices.
    """
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices                  # [B, maxk]
    hit = top.eq(labels[:, None])                          # [B, maxk]
    return [hit[:, :min(k, maxk)].any(dim=1).float().mean().item() for k in ks]


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds differ in length: {labels.shape} vs {preds.shape}")
    return np.bincount(labels * num_classes + preds,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per true class from a confusion matrix; NaN for classes with no samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


class ConfusionMeter:
    """Accumulates a confusion matrix, top-5 hits and loss over batches."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.top5_hits = 0.0
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: float | None = None):
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        self.cm += confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), self.num_classes)
        self.top5_hits += topk_accuracy(logits, labels, (5,))[0] * len(labels)
        if loss is not None:
            self.loss_sum += float(loss) * len(labels)
        self.count += len(labels)

    @property
    def top1(self) -> float:
        return float(np.trace(self.cm) / max(self.count, 1))

    @property
    def top5(self) -> float:
        return self.top5_hits / max(self.count, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    def per_class(self) -> np.ndarray:
        return per_class_accuracy(self.cm)
