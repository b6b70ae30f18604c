"""STL-10 (labelled part) from the official ``stl10_binary`` files.

``{train,test}_X.bin``: uint8 ``[N, 3, 96, 96]`` with each channel plane stored column-major;
``{train,test}_y.bin``: uint8 labels 1-10, mapped to 0-9; ``class_names.txt``: one per line.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from preprocessing.common import (Sample, Summary, find_dir, folder_name, register_converter,
                                  resolve_expected, write_dataset)

COUNTS = {"train": 5000, "test": 8000}
SIZE = 96


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 96, 96, 3]`` uint8 (a lazy memmap view) and labels ``[N]`` (0-9)."""
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for path in (x_path, y_path):
        if not path.is_file():
            raise FileNotFoundError(f"STL-10 file not found: {path}")
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    per_image = 3 * SIZE * SIZE
    if x_path.stat().st_size != len(labels) * per_image:
        raise ValueError(f"{x_path}: {x_path.stat().st_size} bytes is not {len(labels)} images "
                         f"of 3x{SIZE}x{SIZE} ({y_path} holds {len(labels)} labels)")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{y_path}: labels must be 1-10, found {labels.min()}-{labels.max()}")
    images = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(len(labels), 3, SIZE, SIZE))
    # Column-major planes: axis 2 of the raw array is the image column.
    return np.transpose(images, (0, 3, 2, 1)), labels - 1


def _samples(folder: Path) -> Iterator[Sample]:
    for split in ("train", "test"):
        images, labels = read_split(folder, split)
        for index, label in enumerate(labels):
            yield Sample(np.array(images[index]), int(label), split, f"{split}_{index:05d}.png")


def convert_stl10(source: str | Path, output: str | Path,
                  expected_counts: Mapping[str, int] | None = None, verify: bool = True) -> Summary:
    folder = find_dir(source, ["stl10_binary", ""], "class_names.txt", "stl10")
    lines = (folder / "class_names.txt").read_text().splitlines()
    classes = [folder_name(line) for line in lines if line.strip()]
    return write_dataset(_samples(folder), output, classes, "stl10",
                         resolve_expected(COUNTS, expected_counts, verify),
                         total=sum(COUNTS.values()) if expected_counts is None else None)


@register_converter("stl10")
def prepare_stl10(args: argparse.Namespace) -> Summary:
    if args.download:
        from torchvision import datasets
        for split in ("train", "test"):
            datasets.STL10(root=str(args.source), split=split, download=True)
    return convert_stl10(args.source, args.output, verify=not args.no_verify)
