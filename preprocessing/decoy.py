"""Decoy datasets after DecoyMNIST (Ross et al., 2017), with ground-truth object masks.

From a prepared grayscale dataset ``SOURCE`` this writes ``OUT`` with the same layout, where
every image carries a decoy that encodes the label in training images and a uniformly random
class in the ``test`` (and ``val``) images, so a model that learnt the shortcut fails there.
Two kinds:

- ``shade`` (DecoyMNIST): a small square in a random corner (side ``round(4 * size / 28)``:
  4 px at 28 px, 5 px at 32 px) of shade ``255 - 25 * label`` (about 2 % of the image: a
  CNN with global average pooling, crop + flip augmentation and a short training may not
  take it).
- ``texture``: one of ten binary textures (lines, bands, checkers, dots, grids) painted where
  the object mask is 0 at intensity ``strength`` (the brighter of image and texture is
  kept): the background, and the dark parts of an object below the mask threshold (about
  a fifth of Fashion-MNIST's non-zero pixels, e.g. dark garment interiors). Spatially extended, it survives crops and flips, and a CNN takes
  it: this is the shortcut benchmark's decoy.
- ``glyph`` and ``spot`` (:mod:`preprocessing.patches`): a local class-coded patch, a 4x4
  binary glyph or the DecoyMNIST shade square, at a random position on the background that
  never covers the object, so the mask stays the object's and the decoy lies outside it.
- ``none``: the images unchanged (with the same splits and masks): the decoy-free twin of a
  decoy dataset, to train the clean reference model on the same images.

``OUT/masks/<split>/<class>/<stem>.png`` holds the object mask: pixels of the original image
above a quarter of its maximum are 255, background and the decoy are 0. With
``val_per_class``, that many training images per class (a seeded random choice) become a
``val`` split with random decoys, held out of training for choosing hyperparameters; with
``train_per_class`` the training split keeps that many images per class, with
``test_per_class`` the test split that many (a seeded random choice: cheaper evaluation in
long grids; the paired comparisons see the same images). Corner, texture and
test class come from a generator seeded per image, so a rebuild gives the same files.
"""
from __future__ import annotations

import argparse
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from PIL import Image

from preprocessing import digits, mnist, patches
from preprocessing.common import (SPLITS, Sample, Summary, read_classes,
                                  register_converter, write_dataset)

MASK_THRESHOLD = 0.25  # object = original pixels above this fraction of the image maximum
SHADE_STEP = 25
KINDS = ("shade", "texture", *patches.KINDS, "none")
TEXTURE_STRENGTH = 60
NUM_TEXTURES = 10


def patch_size(image_size: int) -> int:
    return max(1, round(4 * image_size / 28))


def shade(label: int) -> int:
    return 255 - SHADE_STEP * label


def texture(label: int, height: int, width: int) -> np.ndarray:
    """Texture ``label`` (0-9) as a ``[H, W]`` {0, 1} array. Each is invariant to horizontal
    flips and 4-px shifts up to phase, so crop + flip augmentation keeps it recognisable."""
    yy, xx = np.mgrid[0:height, 0:width]
    patterns = (
        np.ones_like(yy), yy % 2, (yy // 2) % 2, xx % 2, (xx // 2) % 2, (xx + yy) % 2,
        (xx // 2 + yy // 2) % 2, (xx % 2) * (yy % 2), (xx % 4 == 0) | (yy % 4 == 0),
        (xx % 4 == 0) & (yy % 4 == 0),
    )
    return patterns[label].astype(np.uint8)


def object_mask(image: np.ndarray) -> np.ndarray:
    return np.where(image > MASK_THRESHOLD * image.max(), 255, 0).astype(np.uint8)


def add_decoy(image: np.ndarray, label: int, split: str, num_classes: int,
              rng: np.random.Generator, kind: str = "shade",
              strength: int = TEXTURE_STRENGTH) -> tuple[np.ndarray, np.ndarray]:
    """The decoyed image and the object mask, both ``[H, W]`` uint8, for one ``[H, W]`` image.

    The decoy encodes ``label`` in the ``train`` split and a random class in the others.
    """
    if kind not in KINDS:
        raise ValueError(f"decoy kind must be one of {KINDS}, got {kind!r}")
    h, w = image.shape
    mask = object_mask(image)
    if kind == "none":
        return image.copy(), mask
    if kind in patches.KINDS:
        code = label if split == "train" else int(rng.integers(num_classes))
        return patches.paint(image, mask, kind, code, rng)[0], mask
    if kind == "texture":
        code = label if split == "train" else int(rng.integers(num_classes))
        paint = texture(code, h, w) * np.uint8(strength)
        decoyed = np.where(mask > 0, image, np.maximum(image, paint)).astype(np.uint8)
        return decoyed, mask
    p = patch_size(min(h, w))
    top, left = [(0, 0), (0, w - p), (h - p, 0), (h - p, w - p)][rng.integers(4)]
    value = shade(label if split == "train" else int(rng.integers(num_classes)))
    decoyed = image.copy()
    decoyed[top:top + p, left:left + p] = value
    mask[top:top + p, left:left + p] = 0
    return decoyed, mask


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("*") if f.is_file()
                  and not f.name.startswith(".")) if folder.is_dir() else []


def _assign(source: Path, classes: list[str], seed: int, val_per_class: int,
            train_per_class: int, test_per_class: int = 0) -> list[tuple[str, str, int, Path]]:
    """``(output split, source split, label, path)`` for every image to write."""
    items = []
    for split in SPLITS:
        for label, name in enumerate(classes):
            files = _files(source / split / name)
            if split == "train" and (val_per_class or train_per_class):
                order = np.random.default_rng([seed, label]).permutation(len(files))
                files = [files[i] for i in order]
                if len(files) <= val_per_class:
                    raise ValueError(f"{source / split / name}: {len(files)} images, cannot "
                                     f"hold out {val_per_class} for validation")
                items += [("val", split, label, f) for f in sorted(files[:val_per_class])]
                files = files[val_per_class:]
                files = sorted(files[:train_per_class] if train_per_class else files)
            if split == "test" and test_per_class:
                order = np.random.default_rng([seed, label, 1]).permutation(len(files))
                files = sorted(files[i] for i in order[:test_per_class])
            items += [(split, split, label, f) for f in files]
    return items


def expected_split_counts(items, verify: bool, expected_counts: dict | None) -> dict | None:
    """The image count per output split that ``write_dataset`` checks (None: no check):
    ``expected_counts`` where given, else the counts of ``items`` (from :func:`_assign`)."""
    if not verify:
        return None
    if expected_counts is not None:
        return expected_counts
    counts: dict[str, int] = {}
    for out_split, *_ in items:
        counts[out_split] = counts.get(out_split, 0) + 1
    return counts


def _samples(items, classes: list[str], seed: int, masks: bool, kind: str,
             strength: int) -> Iterator[Sample]:
    for out_split, split, label, path in items:
        with Image.open(path) as img:
            if img.mode != "L":
                raise ValueError(f"decoy needs grayscale images; {path} is {img.mode}")
            image = np.asarray(img)
        key = zlib.crc32(f"{split}/{classes[label]}/{path.name}".encode())
        rng = np.random.default_rng([seed, key])
        decoyed, mask = add_decoy(image, label, out_split, len(classes), rng, kind, strength)
        yield Sample(mask if masks else decoyed, label, out_split, path.stem + ".png")


def make_decoy(source: str | Path, output: str | Path, seed: int = 0,
               expected_counts: Mapping[str, int] | None = None, verify: bool = True,
               kind: str = "shade", strength: int = TEXTURE_STRENGTH, val_per_class: int = 0,
               train_per_class: int = 0, test_per_class: int = 0) -> Summary:
    """Write the decoy copy of the prepared dataset ``source`` and its masks to ``output``.

    By default the expected counts are those the split options give from ``source``.
    """
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise ValueError(f"decoy output must differ from its source {source}")
    if kind not in KINDS:
        raise ValueError(f"decoy kind must be one of {KINDS}, got {kind!r}")
    classes = read_classes(source)
    limit = NUM_TEXTURES if kind == "texture" else patches.MAX_CLASSES.get(
        kind, 255 // SHADE_STEP + 1)
    if len(classes) > limit:
        raise ValueError(f"the {kind} decoy encodes at most {limit} classes, {source} has "
                         f"{len(classes)}")
    if not 0 < strength <= 255:
        raise ValueError(f"decoy strength must be in 1..255, got {strength}")
    items = _assign(source, classes, seed, val_per_class, train_per_class, test_per_class)
    expected = expected_split_counts(items, verify, expected_counts)
    name, total = f"decoy({source.name})", len(items)
    summary = write_dataset(_samples(items, classes, seed, False, kind, strength), output,
                            classes, name, expected, total=total)
    write_dataset(_samples(items, classes, seed, True, kind, strength), output / "masks",
                  classes, f"{name} masks", expected, total=total, write_classes=False)
    return summary


def _decoy_options(args: argparse.Namespace) -> dict:
    return dict(verify=not args.no_verify, kind=args.decoy_kind, strength=args.decoy_strength,
                val_per_class=args.val_per_class, train_per_class=args.subset_per_class)


def _plain_output(args: argparse.Namespace, base: str) -> Path:
    return Path(args.plain_output) if args.plain_output else Path(args.output).parent / base


@register_converter("decoy")
def prepare_decoy(args: argparse.Namespace) -> Summary:
    return make_decoy(args.source, args.output, args.seed, **_decoy_options(args))


@register_converter("decoy_digits", needs_source=False)
def prepare_decoy_digits(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "digits")
    digits.prepare_digits(args, output=plain)
    return make_decoy(plain, args.output, args.seed, **_decoy_options(args))


@register_converter("decoy_mnist")
def prepare_decoy_mnist(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "mnist")
    mnist.prepare("mnist", args, output=plain)
    return make_decoy(plain, args.output, args.seed, **_decoy_options(args))


@register_converter("decoy_fashion_mnist")
def prepare_decoy_fashion_mnist(args: argparse.Namespace) -> Summary:
    plain = _plain_output(args, "fashion_mnist")
    mnist.prepare("fashion_mnist", args, output=plain)
    return make_decoy(plain, args.output, args.seed, **_decoy_options(args))
