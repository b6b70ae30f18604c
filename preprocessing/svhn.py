"""SVHN (cropped digits) from the official ``{train,test}_32x32.mat`` files.

``X`` is ``[32, 32, 3, N]`` uint8 and ``y`` is ``[N, 1]`` with labels 1-10, where 10 is the
digit 0; labels are mapped so that the label index is the digit.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import scipy.io

from preprocessing.common import (Sample, Summary, register_converter, resolve_expected,
                                  write_dataset)

COUNTS = {"train": 73257, "test": 26032}
CLASSES = [str(d) for d in range(10)]


def read_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and digit labels ``[N]`` (0-9) from one ``.mat`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SVHN file not found: {path} (pass --download or point "
                                f"--source at the folder holding it)")
    mat = scipy.io.loadmat(path)
    x, y = mat["X"], np.asarray(mat["y"]).astype(np.int64).ravel()
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f"{path}: expected X [32, 32, 3, N] and N labels, got {x.shape} "
                         f"and {len(y)}")
    if y.min(initial=1) < 1 or y.max(initial=10) > 10:
        raise ValueError(f"{path}: labels must be 1-10, found {y.min()}-{y.max()}")
    return np.transpose(x, (3, 0, 1, 2)).astype(np.uint8, copy=False), y % 10


def _samples(source: Path) -> Iterator[Sample]:
    for split in ("train", "test"):
        images, labels = read_mat(source / f"{split}_32x32.mat")
        for index, (image, label) in enumerate(zip(images, labels)):
            yield Sample(image, int(label), split, f"{split}_{index:05d}.png")


def convert_svhn(source: str | Path, output: str | Path,
                 expected_counts: Mapping[str, int] | None = None, verify: bool = True) -> Summary:
    return write_dataset(_samples(Path(source)), output, CLASSES, "svhn",
                         resolve_expected(COUNTS, expected_counts, verify),
                         total=sum(COUNTS.values()) if expected_counts is None else None)


@register_converter("svhn")
def prepare_svhn(args: argparse.Namespace) -> Summary:
    if args.download:
        from torchvision import datasets
        for split in ("train", "test"):
            datasets.SVHN(root=str(args.source), split=split, download=True)
    return convert_svhn(args.source, args.output, verify=not args.no_verify)
