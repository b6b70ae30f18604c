"""The embedded default dataset: scikit-learn's bundled 8x8 digits, as 32x32 grayscale PNGs.

1797 images with values 0-16 are scaled to 0-255, upscaled with bicubic interpolation and
split 80/20, stratified by class. Needs no download.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from preprocessing.common import Sample, Summary, register_converter, write_dataset

CLASSES = [str(d) for d in range(10)]
SIZE = 32


def digit_images(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[1797, size, size]`` uint8 and labels ``[1797]``."""
    digits = load_digits()
    scaled = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
                       for img in scaled])
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), digits.target.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified 80/20 split of sample indices, each sorted."""
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                   random_state=seed)
    return {"train": np.sort(train), "test": np.sort(test)}


def samples(images: np.ndarray, labels: np.ndarray,
             splits: dict[str, np.ndarray]) -> Iterator[Sample]:
    # File names keep the index into load_digits(), so every file traces back to its source.
    for split, indices in splits.items():
        for i in indices:
            yield Sample(images[i], int(labels[i]), split, f"{split}_{i:05d}.png")


def convert_digits(output: str | Path, seed: int = 0, verify: bool = True) -> Summary:
    images, labels = digit_images()
    splits = split_indices(labels, seed)
    expected = {split: len(idx) for split, idx in splits.items()} if verify else None
    return write_dataset(samples(images, labels, splits), output, CLASSES, "digits", expected,
                         total=len(labels))


@register_converter("digits", needs_source=False)
def prepare_digits(args: argparse.Namespace, output: str | Path | None = None) -> Summary:
    if args.download:
        raise ValueError("digits is bundled with scikit-learn; it has no download")
    return convert_digits(output or args.output, args.seed, verify=not args.no_verify)
