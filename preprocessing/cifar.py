"""CIFAR-10 / CIFAR-100 from the official python pickle batches.

Each batch is a dict with bytes keys: ``b'data'`` ``[N, 3072]`` uint8 (R, G, B planes of
32x32, row-major) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100).
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from preprocessing.common import (Sample, Summary, find_dir, folder_name, register_converter,
                                  resolve_expected, write_dataset)

# name -> (folder, train files, test files, meta file, label key, class-name key, counts)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names", {"train": 50000, "test": 10000}),
    "cifar100": ("cifar-100-python", ["train"], ["test"],
                 "meta", b"fine_labels", b"fine_label_names", {"train": 50000, "test": 10000}),
}


def _load_pickle(path: Path) -> dict:
    # Pickle can run code on load; only the official batch files named above are opened.
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and labels ``[N]`` from one pickle batch."""
    batch = _load_pickle(path)
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} "
                         f"and {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _samples(folder: Path, files: Mapping[str, list[str]], label_key: bytes) -> Iterator[Sample]:
    for split, names in files.items():
        index = 0
        for name in names:
            images, labels = read_batch(folder / name, label_key)
            for image, label in zip(images, labels):
                yield Sample(image, int(label), split, f"{split}_{index:05d}.png")
                index += 1


def convert_cifar(name: str, source: str | Path, output: str | Path,
                  expected_counts: Mapping[str, int] | None = None, verify: bool = True) -> Summary:
    """Convert ``cifar10`` or ``cifar100`` found in ``source`` (or ``source/<official folder>``)."""
    sub, train, test, meta, label_key, names_key, official = LAYOUTS[name]
    folder = find_dir(source, [sub, ""], meta, name)
    classes = [folder_name(n.decode()) for n in _load_pickle(folder / meta)[names_key]]
    return write_dataset(_samples(folder, {"train": train, "test": test}, label_key), output,
                         classes, name, resolve_expected(official, expected_counts, verify),
                         total=sum(official.values()) if expected_counts is None else None)


def download(name: str, source: str | Path) -> None:
    from torchvision import datasets
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    for train in (True, False):
        cls(root=str(source), train=train, download=True)


def _prepare(name: str, args: argparse.Namespace) -> Summary:
    if args.download:
        download(name, args.source)
    return convert_cifar(name, args.source, args.output, verify=not args.no_verify)


@register_converter("cifar10")
def prepare_cifar10(args: argparse.Namespace) -> Summary:
    return _prepare("cifar10", args)


@register_converter("cifar100")
def prepare_cifar100(args: argparse.Namespace) -> Summary:
    return _prepare("cifar100", args)
