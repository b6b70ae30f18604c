"""Decoy datasets after DecoyMNIST (Ross et al., 2017), with ground-truth object masks.

From a prepared grayscale dataset ``SOURCE`` this writes ``OUT`` with the same layout, where
every image gets a small square in a random corner (side ``round(4 * size / 28)``: 4 px at
28 px, 5 px at 32 px). In training images the square's shade encodes the label
(``255 - 25 * label``); in test images it is the shade of a uniformly random class, so a
model that learnt the shortcut fails on test. ``OUT/masks/<split>/<class>/<stem>.png`` holds
the object mask: pixels of the original image above a quarter of its maximum are 255,
background and the decoy square are 0. Corner and test shade come from a generator seeded
per image, so a rebuild gives the same files.
"""
from __future__ import annotations

import argparse
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from PIL import Image

from preprocessing import digits, mnist
from preprocessing.common import (SPLITS, Sample, Summary, count_files, read_classes,
                                  register_converter, write_dataset)

MASK_THRESHOLD = 0.25  # object = original pixels above this fraction of the image maximum
SHADE_STEP = 25


def patch_size(image_size: int) -> int:
    return max(1, round(4 * image_size / 28))


def shade(label: int) -> int:
    return 255 - SHADE_STEP * label


def add_decoy(image: np.ndarray, label: int, split: str, num_classes: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The decoyed image and the object mask, both ``[H, W]`` uint8, for one ``[H, W]`` image."""
    h, w = image.shape
    p = patch_size(min(h, w))
    top, left = [(0, 0), (0, w - p), (h - p, 0), (h - p, w - p)][rng.integers(4)]
    value = shade(label if split == "train" else int(rng.integers(num_classes)))
    decoyed = image.copy()
    decoyed[top:top + p, left:left + p] = value
    mask = np.where(image > MASK_THRESHOLD * image.max(), 255, 0).astype(np.uint8)
    mask[top:top + p, left:left + p] = 0
    return decoyed, mask


def _samples(source: Path, classes: list[str], seed: int, masks: bool) -> Iterator[Sample]:
    for split in SPLITS:
        for label, name in enumerate(classes):
            folder = source / split / name
            files = sorted(f for f in folder.glob("*") if f.is_file()
                           and not f.name.startswith(".")) if folder.is_dir() else []
            for path in files:
                with Image.open(path) as img:
                    if img.mode != "L":
                        raise ValueError(f"decoy needs grayscale images; {path} is {img.mode}")
                    image = np.asarray(img)
                key = zlib.crc32(f"{split}/{name}/{path.name}".encode())
                rng = np.random.default_rng([seed, key])
                decoyed, mask = add_decoy(image, label, split, len(classes), rng)
                yield Sample(mask if masks else decoyed, label, split, path.stem + ".png")


def make_decoy(source: str | Path, output: str | Path, seed: int = 0,
               expected_counts: Mapping[str, int] | None = None, verify: bool = True) -> Summary:
    """Write the decoy copy of the prepared dataset ``source`` and its masks to ``output``.

    By default the expected counts are those of ``source``.
    """
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise ValueError(f"decoy output must differ from its source {source}")
    classes = read_classes(source)
    if shade(len(classes) - 1) < 0:
        raise ValueError(f"decoy shades 255 - {SHADE_STEP} * label need at most "
                         f"{255 // SHADE_STEP + 1} classes, {source} has {len(classes)}")
    source_counts = {s: sum(c.values()) for s, c in count_files(source).items()}
    expected = None if not verify else source_counts if expected_counts is None else expected_counts
    name, total = f"decoy({source.name})", sum(source_counts.values())
    summary = write_dataset(_samples(source, classes, seed, masks=False), output, classes,
                            name, expected, total=total)
    write_dataset(_samples(source, classes, seed, masks=True), output / "masks", classes,
                  f"{name} masks", expected, total=total, write_classes=False)
    return summary


def _plain_output(args: argparse.Namespace, base: str) -> Path:
    return Path(args.plain_output) if args.plain_output else Path(args.output).parent / base


@register_converter("decoy")
def prepare_decoy(args: argparse.Namespace) -> Summary:
    return make_decoy(args.source, args.output, args.seed, verify=not args.no_verify)


@register_converter("decoy_digits", needs_source=False)
def prepare_decoy_digits(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "digits")
    digits.prepare_digits(args, output=plain)
    return make_decoy(plain, args.output, args.seed, verify=not args.no_verify)


@register_converter("decoy_mnist")
def prepare_decoy_mnist(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "mnist")
    mnist.prepare("mnist", args, output=plain)
    return make_decoy(plain, args.output, args.seed, verify=not args.no_verify)


@register_converter("decoy_fashion_mnist")
def prepare_decoy_fashion_mnist(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "fashion_mnist")
    mnist.prepare("fashion_mnist", args, output=plain)
    return make_decoy(plain, args.output, args.seed, verify=not args.no_verify)
