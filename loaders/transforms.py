"""Train/eval transforms per dataset (torchvision v2, so masks follow images jointly)."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from loaders.registry import DatasetSpec


def normalization_stats(spec: DatasetSpec,
                        in_channels: int) -> tuple[list[float], list[float]]:
    """Mean/std for ``in_channels``, adapting a dataset's stats if the channels differ."""
    mean, std = list(spec.mean), list(spec.std)
    if len(mean) == in_channels:
        return mean, std
    if in_channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean * in_channels, std * in_channels


def resizes(spec: DatasetSpec) -> bool:
    """Whether :func:`build_transform` resizes the images (to ``spec.size``): above 64 px or
    with an ``input_size`` of its own. Otherwise every image must be ``spec.image_size``."""
    return bool(spec.input_size and spec.input_size != spec.image_size) or spec.size > 64


def build_transform(spec: DatasetSpec, train: bool, in_channels: int | None = None) -> v2.Compose:
    """Released augmentation.

    * 28/32 px: random crop with 4 px padding + horizontal flip (not for digits).
    * 96/224 px: resize to ``spec.input_size`` + horizontal and vertical flips.
    Evaluation: resize (if any) and normalise only.
    """
    in_channels = in_channels or spec.in_channels
    mean, std = normalization_stats(spec, in_channels)
    steps = [v2.ToImage()]       # geometric steps on uint8 (cheaper), then float
    large = spec.size > 64
    if resizes(spec):
        steps.append(v2.Resize((spec.size, spec.size), antialias=True))
    if train:
        if large:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        else:
            steps.append(v2.RandomCrop(spec.size, padding=4))
            if spec.hflip:
                steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)
