"""Waterbirds-style data: Fashion-MNIST items pasted on photographic backgrounds.

Each item of a prepared grayscale dataset ``SOURCE`` (28 px) is scaled (nearest neighbour,
to 45-80 % of the image side) and pasted at a random position onto a crop of one of the
photographs that scikit-image ships (no download), giving an RGB image of ``size`` px (64 by
default, or 96). The photographs form :data:`PLACES`; class ``c`` has the place
``c % len(PLACES)``. With ``correlation`` p, a training image gets its class's place with
probability p and one of the other places (uniformly) otherwise; in ``val`` and ``test`` the
place is uniform, independent of the class, so a model that learnt the place fails there.
``correlation`` 0 draws the place uniformly in every split: backgrounds independent of the
class, the large-image stand-in for STL-10 (an object on a real photograph, exact masks).

Outputs, as :mod:`preprocessing.decoy`: ``OUT/<split>/<class>/<stem>.png``, the object masks
``OUT/masks/<split>/<class>/<stem>.png`` (255 where the scaled item's pixels are above a
quarter of its maximum, ``decoy.object_mask``; the item is pasted exactly there and the
photograph fills every other pixel), and ``OUT/<split>/groups.csv`` with one row per image:
``file`` (relative to the split), ``class``, ``place``, ``agrees`` (1 when the place is the
class's), ``group`` (``2 * class + agrees``, for worst-group accuracy, see
:mod:`metrics.groups`) and the item's box ``top, left, side``. Every draw comes from a
generator seeded per image, so a rebuild gives the same files.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import zlib
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple

import numpy as np
from PIL import Image

from preprocessing import decoy, mnist
from preprocessing.common import Sample, Summary, read_classes, register_converter, write_dataset
from utils.io import atomic_write_text

# place -> photographs of skimage.data (all in its wheel); grey ones are used as grey RGB
PLACES: dict[str, tuple[str, ...]] = {
    "ground": ("brick", "grass", "gravel"),
    "portrait": ("astronaut", "camera", "chelsea"),
    "things": ("coffee", "coins", "clock"),
    "sky": ("hubble_deep_field", "moon", "rocket"),
    "microscope": ("immunohistochemistry", "retina", "cell"),
}
PLACE_NAMES = tuple(PLACES)
SIZES = (64, 96)
DATA_NAMES = {64: "photo_fashion_mnist", 96: "photo_fashion_mnist96"}
OBJECT_SCALE = (0.45, 0.8)     # item side as a share of the image side
DEFAULT_CORRELATION = 0.95
GROUP_FIELDS = ("file", "class", "place", "agrees", "group", "top", "left", "side")


class Placement(NamedTuple):
    top: int
    left: int
    side: int


@functools.cache
def photo(name: str, size: int) -> np.ndarray:
    """``skimage.data.<name>()`` as ``[H, W, 3]`` uint8, shrunk so that its shorter side is
    at most ``4 * size`` (crops then need little resampling)."""
    from skimage import data
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.uint8)
    factor = 4 * size / min(image.shape[:2])
    if factor < 1:
        h, w = (round(d * factor) for d in image.shape[:2])
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return image


def class_place(label: int) -> int:
    return label % len(PLACES)


def check_correlation(correlation: float) -> None:
    """0 (independent) or a share of at least ``1 / len(PLACES)`` (below: anti-correlated)."""
    if not (correlation == 0 or 1 / len(PLACES) <= correlation <= 1):
        raise ValueError(f"correlation must be 0 (independent) or in [1/{len(PLACES)}, 1], "
                         f"got {correlation}")


def correlation_arg(text: str) -> float:
    """``--correlation`` for argparse: a bad value is a one-line usage error."""
    try:
        value = float(text)
        check_correlation(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def draw_place(label: int, split: str, correlation: float, rng: np.random.Generator) -> int:
    """The place of one image (see the module docstring)."""
    count, own = len(PLACES), class_place(label)
    if split != "train" or correlation == 0:
        return int(rng.integers(count))
    if rng.random() < correlation:
        return own
    other = int(rng.integers(count - 1))
    return other + (other >= own)


def draw_placement(item_size: int, size: int, rng: np.random.Generator) -> Placement:
    """The item's box: side 45-80 % of ``size`` (never below ``item_size``, so nearest
    scaling keeps every source pixel), uniform position inside the image."""
    low = max(item_size, round(OBJECT_SCALE[0] * size))
    side = int(rng.integers(low, max(low, round(OBJECT_SCALE[1] * size)) + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
    return Placement(top, left, side)


def background(place: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of one of the place's photographs, ``[size, size, 3]`` uint8."""
    names = PLACES[PLACE_NAMES[place]]
    image = photo(names[int(rng.integers(len(names)))], size)
    h, w = image.shape[:2]
    side = int(rng.integers(min(size, h, w), min(h, w) + 1))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(image).resize((size, size), Image.BILINEAR,
                                         box=(left, top, left + side, top + side))
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def scale_nearest(array: np.ndarray, side: int) -> np.ndarray:
    """``array`` (``[h, w]``) resized to ``[side, side]`` by nearest neighbour (pixel copies)."""
    rows = np.arange(side) * array.shape[0] // side
    cols = np.arange(side) * array.shape[1] // side
    return array[rows[:, None], cols[None, :]]


def object_mask(item: np.ndarray, box: Placement, size: int) -> np.ndarray:
    """The ``[size, size]`` mask (255 object, 0 background) of ``item`` pasted in ``box``."""
    mask = np.zeros((size, size), np.uint8)
    mask[box.top:box.top + box.side, box.left:box.left + box.side] = scale_nearest(
        decoy.object_mask(item), box.side)
    return mask


def paste(item: np.ndarray, box: Placement, back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``item`` (``[h, w]`` uint8) scaled into ``box`` on ``back`` (``[S, S, 3]``): the image
    (item grey inside the mask, ``back`` elsewhere) and the mask."""
    mask = object_mask(item, box, back.shape[0])
    grey = np.zeros(back.shape[:2], np.uint8)
    grey[box.top:box.top + box.side, box.left:box.left + box.side] = scale_nearest(item, box.side)
    return np.where(mask[:, :, None] > 0, grey[:, :, None], back).astype(np.uint8), mask


class Drawn(NamedTuple):
    box: Placement
    place: int


def draw(item: np.ndarray, label: int, split: str, correlation: float, size: int,
         rng: np.random.Generator) -> Drawn:
    """The box, then the place (the draws before the background: the masks need no photo)."""
    box = draw_placement(max(item.shape), size, rng)
    return Drawn(box, draw_place(label, split, correlation, rng))


def _rng(seed: int, split: str, class_name: str, path: Path) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{split}/{class_name}/{path.name}".encode())])


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode != "L":
            raise ValueError(f"photo backgrounds need grayscale items; {path} is {img.mode}")
        return np.asarray(img)


def _samples(items, classes: list[str], seed: int, correlation: float, size: int,
             masks: bool, rows: dict[str, list[dict]] | None = None) -> Iterator[Sample]:
    for out_split, split, label, path in items:
        item = _read(path)
        rng = _rng(seed, split, classes[label], path)
        drawn = draw(item, label, out_split, correlation, size, rng)
        filename = path.stem + ".png"
        if rows is not None:
            agrees = int(drawn.place == class_place(label))
            row = {"file": f"{classes[label]}/{filename}", "class": label,
                   "place": PLACE_NAMES[drawn.place], "agrees": agrees,
                   "group": 2 * label + agrees, **drawn.box._asdict()}
            rows.setdefault(out_split, []).append(row)
        if masks:
            yield Sample(object_mask(item, drawn.box, size), label, out_split, filename)
        else:
            image, _ = paste(item, drawn.box, background(drawn.place, size, rng))
            yield Sample(image, label, out_split, filename)


def write_groups(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=GROUP_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_groups(path: str | Path) -> list[dict[str, int | str]]:
    """The rows of a ``groups.csv``, integers as ``int``."""
    with open(path, newline="") as f:
        return [{k: v if k in ("file", "place") else int(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def make_photo(source: str | Path, output: str | Path, seed: int = 0,
               correlation: float = DEFAULT_CORRELATION, size: int = 64,
               val_per_class: int = 0, train_per_class: int = 0, test_per_class: int = 0,
               expected_counts: Mapping[str, int] | None = None,
               verify: bool = True) -> Summary:
    """Write the photo-background copy of the prepared grayscale dataset ``source``, its
    masks and ``groups.csv`` files to ``output`` (the splits as :func:`decoy.make_decoy`)."""
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise ValueError(f"photo output must differ from its source {source}")
    if size not in SIZES:
        raise ValueError(f"photo image size must be one of {SIZES}, got {size}")
    check_correlation(correlation)
    classes = read_classes(source)
    items = decoy._assign(source, classes, seed, val_per_class, train_per_class,
                          test_per_class)
    expected = decoy.expected_split_counts(items, verify, expected_counts)
    name, total = f"photo({source.name}, p={correlation:g})", len(items)
    summary = write_dataset(_samples(items, classes, seed, correlation, size, False), output,
                            classes, name, expected, total=total)
    rows: dict[str, list[dict]] = {}
    write_dataset(_samples(items, classes, seed, correlation, size, True, rows),
                  output / "masks", classes, f"{name} masks", expected, total=total,
                  write_classes=False)
    for split, split_rows in rows.items():
        write_groups(output / split / "groups.csv", split_rows)
    return summary


def _prepare(args: argparse.Namespace, size: int) -> Summary:
    plain = Path(args.plain_output) if args.plain_output else \
        Path(args.output).parent / "fashion_mnist"
    mnist.prepare("fashion_mnist", args, output=plain)
    return make_photo(plain, args.output, args.seed, args.correlation, size,
                      args.val_per_class, args.subset_per_class, verify=not args.no_verify)


@register_converter(DATA_NAMES[64])
def prepare_photo_fashion_mnist(args: argparse.Namespace) -> Summary:
    return _prepare(args, 64)


@register_converter(DATA_NAMES[96])
def prepare_photo_fashion_mnist96(args: argparse.Namespace) -> Summary:
    return _prepare(args, 96)
