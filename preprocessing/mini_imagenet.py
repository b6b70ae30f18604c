"""mini-ImageNet (``--data_name mnin``, the loaders' and the released code's name; also
accepted as ``mini_imagenet``), re-split as in the paper.

Source: ``images/`` (jpgs) and ``train.csv`` / ``val.csv`` / ``test.csv`` (header
``filename,label``, label = WordNet id). The paper pools the three CSVs (100 classes x 600
images) and splits every class 480 / 120 with a fixed seed; ``num_classes_subset`` keeps K
randomly chosen classes (the paper's "10 random categories"). Image files are copied
byte for byte; the loaders resize them. Label order: the chosen wnids, sorted.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from preprocessing.common import (Sample, Summary, register_converter, resolve_expected,
                                  write_dataset)
from utils.io import safe_child

CSV_FILES = ("train.csv", "val.csv", "test.csv")
NAME, ALIAS = "mnin", "mini_imagenet"
IMAGES_PER_CLASS = 600


def read_csvs(source: Path) -> dict[str, list[str]]:
    """``{wnid: sorted filenames}`` pooled over the three CSV files."""
    by_class, seen = defaultdict(list), set()
    for name in CSV_FILES:
        path = source / name
        if not path.is_file():
            raise FileNotFoundError(f"mini-ImageNet split file not found: {path}")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: expected a header 'filename,label', "
                                 f"got {reader.fieldnames}")
            for row in reader:
                for column in ("filename", "label"):
                    if not _plain_name(row[column]):
                        raise ValueError(f"{path}: {column} {row[column]!r} is not a plain file "
                                         f"name (no folders, no '..')")
                if row["filename"] in seen:
                    raise ValueError(f"{path}: {row['filename']} is listed twice")
                seen.add(row["filename"])
                by_class[row["label"]].append(row["filename"])
    return {wnid: sorted(files) for wnid, files in sorted(by_class.items())}


def _plain_name(name: str | None) -> bool:
    """A CSV field used as a file or folder name: one path component, so it stays inside
    ``images/`` when read and inside the output when written."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def split_classes(by_class: dict[str, list[str]], train_per_class: int,
                  num_classes_subset: int = 0, seed: int = 0) -> dict[str, tuple[list, list]]:
    """``{wnid: (train files, test files)}`` for the chosen classes, in label order.

    Each class is shuffled by its own generator (seed, position among all wnids), so a
    class's split does not depend on which other classes were chosen.
    """
    wnids = sorted(by_class)
    if num_classes_subset:
        if not 0 < num_classes_subset <= len(wnids):
            raise ValueError(f"num_classes_subset must be in 1..{len(wnids)}, "
                             f"got {num_classes_subset}")
        chosen = np.random.default_rng(seed).choice(len(wnids), num_classes_subset, replace=False)
        wnids_kept = sorted(wnids[i] for i in chosen)
    else:
        wnids_kept = wnids
    splits = {}
    for wnid in wnids_kept:
        files = by_class[wnid]
        if len(files) <= train_per_class:
            raise ValueError(f"mini-ImageNet class {wnid} has {len(files)} images, "
                             f"needs more than train_per_class={train_per_class}")
        order = np.random.default_rng([seed, wnids.index(wnid)]).permutation(len(files))
        shuffled = [files[i] for i in order]
        splits[wnid] = (sorted(shuffled[:train_per_class]), sorted(shuffled[train_per_class:]))
    return splits


def _find_image(images_dir: Path, wnid: str, filename: str) -> Path:
    for path in (safe_child(images_dir, filename), safe_child(images_dir, Path(wnid, filename))):
        if path.is_file():
            return path
    raise FileNotFoundError(f"mini-ImageNet image {filename} not found in {images_dir}")


def _samples(images_dir: Path, splits: dict[str, tuple[list, list]]) -> Iterator[Sample]:
    for label, (wnid, (train, test)) in enumerate(splits.items()):
        for split, files in (("train", train), ("test", test)):
            for filename in files:
                yield Sample(_find_image(images_dir, wnid, filename), label, split, filename)


def convert_mini_imagenet(source: str | Path, output: str | Path, train_per_class: int = 480,
                          num_classes_subset: int = 0, seed: int = 0,
                          expected_counts: Mapping[str, int] | None = None,
                          verify: bool = True) -> Summary:
    """Pool, (optionally) subsample classes, split per class and copy the images.

    The default expected counts assume the full 600 images per class.
    """
    source = Path(source)
    splits = split_classes(read_csvs(source), train_per_class, num_classes_subset, seed)
    k = len(splits)
    official = {"train": k * train_per_class, "test": k * (IMAGES_PER_CLASS - train_per_class)}
    return write_dataset(_samples(source / "images", splits), output, list(splits),
                         "mini_imagenet", resolve_expected(official, expected_counts, verify),
                         total=sum(len(a) + len(b) for a, b in splits.values()))


@register_converter(NAME)
def prepare_mini_imagenet(args: argparse.Namespace) -> Summary:
    if args.download:
        raise ValueError(f"{NAME} has no download; point --source at the folder with "
                         "images/ and train.csv, val.csv, test.csv")
    return convert_mini_imagenet(args.source, args.output, args.train_per_class,
                                 args.num_classes_subset, args.seed, verify=not args.no_verify)


register_converter(ALIAS)(prepare_mini_imagenet)   # the name this converter had before
