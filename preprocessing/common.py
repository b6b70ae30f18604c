"""The shared writer: samples in, ``ROOT/{train,test}/<class>/<file>`` out.

Every converter turns its official files into an iterator of :class:`Sample` and hands it to
:func:`write_dataset`, which writes each file atomically, skips files that already exist (so a
re-run or a resumed run only fills the gaps), writes ``ROOT/classes.txt`` (class folder names
in label order) and checks the per-split counts on disk.

Converters are registered by name in :data:`CONVERTERS` for ``prepare_data.py``.
"""
from __future__ import annotations

import argparse
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.io import atomic_write, atomic_write_text, safe_child

SPLITS = ("train", "test")


class Sample(NamedTuple):
    """One output file.

    ``image`` is a uint8 array (``[H, W]`` grayscale or ``[H, W, 3]`` RGB, saved as PNG) or
    the path of an existing image file whose bytes are copied unchanged.
    """
    image: np.ndarray | Path
    label: int
    split: str
    filename: str


class CountMismatchError(ValueError):
    """The files on disk do not match the dataset's expected per-split counts."""


@dataclass
class Summary:
    dataset: str
    root: Path
    written: int = 0
    skipped: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> files

    def split_total(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())


# ---------------------------------------------------------------- converter registry

@dataclass(frozen=True)
class Converter:
    fn: Callable[[argparse.Namespace], Summary]
    needs_source: bool


CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str, needs_source: bool = True):
    """Register ``fn(args) -> Summary`` as the ``--data_name name`` entry; duplicates refused."""
    def deco(fn):
        if name in CONVERTERS:
            raise ValueError(f"converter {name!r} is already registered")
        CONVERTERS[name] = Converter(fn, needs_source)
        return fn
    return deco


# ---------------------------------------------------------------- helpers for converters

def folder_name(class_name: str) -> str:
    """A readable, filesystem-safe folder name: ``"T-shirt/top"`` -> ``"t-shirt_top"``."""
    name = re.sub(r"[^a-z0-9._-]+", "_", class_name.strip().lower()).strip("_.")
    if not name:
        raise ValueError(f"class name {class_name!r} gives an empty folder name")
    return name


def find_dir(source: str | Path, candidates: Sequence[str], marker: str, dataset: str) -> Path:
    """The first of ``source/<candidate>`` that holds ``marker`` (``""`` = ``source`` itself)."""
    source = Path(source)
    for sub in candidates:
        folder = source / sub if sub else source
        if (folder / marker).exists():
            return folder
    tried = ", ".join(str(source / c if c else source) for c in candidates)
    raise FileNotFoundError(f"{dataset}: {marker!r} not found in any of: {tried} "
                            f"(pass --download or point --source at the extracted files)")


def resolve_expected(official: Mapping[str, int], expected_counts: Mapping[str, int] | None,
                     verify: bool) -> Mapping[str, int] | None:
    """The counts to verify: the override, else the official ones; ``None`` if not verifying."""
    if not verify:
        return None
    return official if expected_counts is None else expected_counts


def read_classes(root: str | Path) -> list[str]:
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a prepared dataset")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the writer

def _encode_png(image: np.ndarray) -> bytes:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"images must be [H, W] or [H, W, 3], got shape {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "L" if image.ndim == 2 else "RGB").save(buf, "PNG")
    return buf.getvalue()


def _write_classes(root: Path, folders: list[str]) -> None:
    text = "".join(f"{name}\n" for name in folders)
    path = root / "classes.txt"
    if path.exists():
        if path.read_text() != text:
            raise ValueError(f"{path} lists other classes than this dataset; "
                             f"refusing to mix datasets in one folder")
        return  # unchanged: keep the file (and its mtime) as it is
    atomic_write_text(path, text)


def count_files(root: str | Path, splits: Iterable[str] = SPLITS) -> dict[str, dict[str, int]]:
    """Files per class folder for each split; temporary files of a killed run are ignored."""
    counts = {}
    for split in splits:
        split_dir = Path(root) / split
        counts[split] = {} if not split_dir.is_dir() else {
            d.name: sum(1 for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
            for d in sorted(split_dir.iterdir()) if d.is_dir()}
    return counts


def write_dataset(samples: Iterable[Sample], root: str | Path, class_names: Sequence[str],
                  dataset: str, expected_counts: Mapping[str, int] | None = None,
                  total: int | None = None, write_classes: bool = True) -> Summary:
    """Write ``samples`` under ``root``, then check and print the per-split counts.

    Args:
        samples: ``(image, label, split, filename)`` items, see :class:`Sample`.
        root: output folder; ``root/<split>/<class_names[label]>/<filename>``.
        class_names: class folder names in label order (already filesystem-safe).
        dataset: name used in the progress bar, the summary and errors.
        expected_counts: ``{split: number of files}`` to verify on disk; ``None`` skips it.
        total: number of samples, for the progress bar.
        write_classes: write ``root/classes.txt``.

    Raises:
        CountMismatchError: a split's file count on disk differs from ``expected_counts``.
    """
    root = Path(root)
    folders = list(class_names)
    if len(set(folders)) != len(folders) or any(folder_name(n) != n for n in folders):
        raise ValueError(f"{dataset}: class folder names must be unique and filesystem-safe, "
                         f"got {folders}")
    root.mkdir(parents=True, exist_ok=True)
    if write_classes:
        _write_classes(root, folders)

    summary = Summary(dataset, root)
    for image, label, split, filename in tqdm(samples, total=total, desc=dataset, unit="img"):
        if not 0 <= label < len(folders):
            raise ValueError(f"{dataset}: label {label} out of range for {len(folders)} classes")
        dest = safe_child(root, Path(split) / folders[label] / filename)
        if dest.exists():
            summary.skipped += 1
            continue
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else _encode_png(image)
        with atomic_write(dest, "wb") as f:
            f.write(data)
        summary.written += 1

    splits = list(SPLITS) + [s for s in (expected_counts or {}) if s not in SPLITS]
    summary.counts = count_files(root, splits)
    print_summary(summary, folders)
    for split, expected in (expected_counts or {}).items():
        found = summary.split_total(split)
        if found != expected:
            raise CountMismatchError(f"{dataset}: split {split!r} in {root} has {found} files, "
                                     f"expected {expected}")
    return summary


def print_summary(summary: Summary, folders: Sequence[str]) -> None:
    shown = " ".join(folders[:20]) + (f" ... ({len(folders)} in all)" if len(folders) > 20 else "")
    print(f"{summary.dataset}: {summary.written} written, {summary.skipped} skipped "
          f"-> {summary.root}")
    for split, per_class in summary.counts.items():
        if per_class:
            sizes = per_class.values()
            print(f"  {split}: {sum(sizes)} files in {len(per_class)} classes "
                  f"({min(sizes)}-{max(sizes)} per class)")
    print(f"  classes ({len(folders)}): {shown}")
