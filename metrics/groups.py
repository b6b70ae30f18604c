"""Accuracy per group and worst-group accuracy (Sagawa et al., 2020), for data whose images
carry a group, e.g. ``(class, background agrees with the class)`` of
:mod:`preprocessing.photo_backgrounds`."""
from __future__ import annotations

import numpy as np


def group_accuracies(pred, labels, groups) -> dict[int, float]:
    """``{group: share of its samples with pred == label}``, for every group that has samples.

    Args:
        pred, labels, groups: ``[N]`` integer arrays (or tensors, lists).
    """
    pred, labels, groups = (np.asarray(a).ravel() for a in (pred, labels, groups))
    if not pred.shape == labels.shape == groups.shape:
        raise ValueError(f"pred, labels and groups differ in length: {pred.shape}, "
                         f"{labels.shape}, {groups.shape}")
    hit = pred == labels
    return {int(g): float(hit[groups == g].mean()) for g in np.unique(groups)}


def worst_group_accuracy(pred, labels, groups) -> float:
    """The lowest of :func:`group_accuracies`."""
    accuracies = group_accuracies(pred, labels, groups)
    if not accuracies:
        raise ValueError("worst-group accuracy of no samples")
    return min(accuracies.values())
