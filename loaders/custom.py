"""``--data_name folder``: your own images in ``ROOT/{train,test}/<class>/<file>``.

The dataset's settings come from its training split: the image size (every training image
must be one square size) and the per-channel mean and standard deviation of the pixels
(scaled to 0..1), computed once and stored in ``<train>/.stats.json`` (one entry per channel
count), then reused while the number of training images stays the same. Transforms follow
the size rules of :func:`loaders.transforms.build_transform`: up to 64 px random crops with
4 px padding and horizontal flips, above 64 px horizontal and vertical flips.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from loaders.folder import ImageFolderDataset, image_size, open_image, read_classes
from loaders.registry import DatasetSpec
from utils.io import atomic_write_text

FOLDER = "folder"
STATS_FILE = ".stats.json"


def train_split(data_path: str | os.PathLike) -> Path:
    """``data_path/train`` if it exists, else ``data_path`` (a split or a sifted folder)."""
    data_path = Path(data_path)
    if not data_path.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_path}")
    return data_path / "train" if (data_path / "train").is_dir() else data_path


def compute_stats(dataset: ImageFolderDataset) -> dict:
    """``{"image_size", "num_images", "mean", "std"}`` of the images of ``dataset``
    (decoded at its channel count, values in 0..1); every image must be one square size."""
    first = dataset.samples[0][0]
    width, height = image_size(dataset.root / first)
    if width != height:
        raise ValueError(f"image {dataset.root / first} is {width}x{height}: --data_name "
                         f"{FOLDER} needs square images of one size")
    total = np.zeros(dataset.in_channels)
    squares = np.zeros(dataset.in_channels)
    for rel, _ in dataset.samples:
        pixels = np.asarray(open_image(dataset.root / rel, dataset.in_channels), np.float64)
        if pixels.shape[:2] != (height, width):
            raise ValueError(f"image {dataset.root / rel} is {pixels.shape[1]}x"
                             f"{pixels.shape[0]}, but {dataset.root / first} is {width}x"
                             f"{height}: --data_name {FOLDER} needs images of one size")
        pixels = pixels.reshape(-1, dataset.in_channels) / 255
        total += pixels.sum(0)
        squares += (pixels ** 2).sum(0)
    n = len(dataset) * width * height
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    if (std == 0).any():
        raise ValueError(f"the training images of {dataset.root} have a constant channel "
                         f"(std 0): they cannot be normalised")
    return {"image_size": width, "num_images": len(dataset),
            "mean": mean.tolist(), "std": std.tolist()}


def folder_spec(data_path: str | os.PathLike, in_channels: int | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of an image folder, from its training split's
    ``.stats.json`` (computed and written there on first use; a warning if the folder is
    read-only)."""
    in_channels = in_channels or 3
    root = train_split(data_path)
    path = root / STATS_FILE
    dataset = ImageFolderDataset(root, None, in_channels, read_classes(root), allow_empty=True)
    stored = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    entry = stored.get(str(in_channels)) if isinstance(stored, dict) else None
    if not entry or entry.get("num_images") != len(dataset):
        entry = compute_stats(dataset)
        stored = {k: v for k, v in stored.items() if isinstance(v, dict)
                  and v.get("num_images") == len(dataset)} if isinstance(stored, dict) else {}
        stored[str(in_channels)] = entry
        try:
            atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
        except OSError as exc:
            warnings.warn(f"cannot store the normalisation statistics in {path} ({exc}); "
                          f"they are recomputed next time")
    return DatasetSpec(FOLDER, len(dataset.classes), in_channels, int(entry["image_size"]),
                       tuple(entry["mean"]), tuple(entry["std"]))
