"""MNIST and Fashion-MNIST from the official IDX files, gzipped or not.

IDX: a big-endian int32 magic (2051 images, 2049 labels), one big-endian int32 per
dimension, then the uint8 values row-major.
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from preprocessing.common import (Sample, Summary, folder_name, register_converter,
                                  resolve_expected, write_dataset)

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
COUNTS = {"train": 60000, "test": 10000}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Debian's packages of the official files (``apt-get install dataset-fashion-mnist``): used
# when the source folder holds no IDX files, so the real data is reachable offline.
SYSTEM_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
# name -> (class names in label order, folder torchvision downloads into)
DATASETS = {
    "mnist": ([str(d) for d in range(10)], "MNIST/raw"),
    "fashion_mnist": (["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"], "FashionMNIST/raw"),
}


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The array stored in an IDX file; ``magic`` is the expected magic number."""
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        raw = f.read()
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise ValueError(f"{path}: not an IDX file of the expected kind "
                         f"(magic {found}, expected {magic})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {data.size} values")
    return data.reshape(shape)


def _find(folders: list[Path], stem: str) -> Path:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{stem}[.gz] not found in any of: {', '.join(map(str, folders))} "
                            f"(pass --download or point --source at the IDX files)")


def _has_idx(folder: Path) -> bool:
    stems = [stem for pair in FILES.values() for stem in pair]
    return all((folder / s).is_file() or (folder / (s + ".gz")).is_file() for s in stems)


def _samples(folders: list[Path]) -> Iterator[Sample]:
    for split, (images_stem, labels_stem) in FILES.items():
        images_path, labels_path = _find(folders, images_stem), _find(folders, labels_stem)
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{images_path}: {images.shape} images for {len(labels)} labels "
                             f"in {labels_path}")
        for index, (image, label) in enumerate(zip(images, labels)):
            yield Sample(image, int(label), split, f"{split}_{index:05d}.png")


def convert_mnist(name: str, source: str | Path, output: str | Path,
                  expected_counts: Mapping[str, int] | None = None, verify: bool = True) -> Summary:
    """Convert ``mnist`` or ``fashion_mnist`` from ``source`` (or torchvision's ``<Name>/raw``)."""
    class_names, raw_dir = DATASETS[name]
    folders = [Path(source), Path(source) / raw_dir]
    system = SYSTEM_DIRS.get(name)
    if system is not None and not any(_has_idx(f) for f in folders) and _has_idx(system):
        print(f"{name}: no IDX files in {source}; using the system copy in {system}")
        folders.append(system)
    return write_dataset(_samples(folders), output, [folder_name(c) for c in class_names], name,
                         resolve_expected(COUNTS, expected_counts, verify),
                         total=sum(COUNTS.values()) if expected_counts is None else None)


def download(name: str, source: str | Path) -> None:
    from torchvision import datasets
    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(root=str(source), train=train, download=True)


def prepare(name: str, args: argparse.Namespace, output: str | Path | None = None) -> Summary:
    if args.download:
        download(name, args.source)
    return convert_mnist(name, args.source, output or args.output, verify=not args.no_verify)


@register_converter("mnist")
def prepare_mnist(args: argparse.Namespace) -> Summary:
    return prepare("mnist", args)


@register_converter("fashion_mnist")
def prepare_fashion_mnist(args: argparse.Namespace) -> Summary:
    return prepare("fashion_mnist", args)
