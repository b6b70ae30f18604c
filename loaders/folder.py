"""Image-folder datasets in the released layout ``ROOT/<split>/<class>/<file>``.

Label order comes from ``classes.txt`` (one class folder name per line, in label order),
looked up in the class root and then its parent; without it, the sorted class folder names
of ``fallback`` (the dataset's train split, see :func:`loaders.build_dataset`) or of the class
root itself. Every split of a dataset therefore gets the same label order, and a class folder
that is not in that order is an error. A corrupt image is an error that names the file (we
do not silently skip: a skipped image would change the data a published number was
computed on).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from loaders.batch import Batch, PlainBatch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Mask files (written by preprocessing/labelme_to_mask.py): 255 = object, 128 = ignore
# (labelme's ``__ignore__``: "don't care", neither object nor background), 0 = background.
# Read by ranges, so resampled edges keep a meaning: >= 192 object, 64..191 ignore.
# Loaded masks hold these codes:
MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE = 0, 1, 2


def decode_mask(values: np.ndarray) -> np.ndarray:
    """Grey levels of a mask file -> ``MASK_BACKGROUND / MASK_OBJECT / MASK_IGNORE`` (uint8)."""
    values = np.asarray(values)
    return np.where(values >= 192, MASK_OBJECT,
                    np.where(values >= 64, MASK_IGNORE, MASK_BACKGROUND)).astype(np.uint8)


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (hidden folders skipped)."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def read_classes(class_root: str | os.PathLike,
                 fallback: str | os.PathLike | None = None) -> list[str]:
    """Class names in label order for a folder of class folders.

    ``classes.txt`` in ``class_root``, then in its parent; else the sorted class folders of
    ``fallback`` (e.g. the train split, so that a test split with a class folder missing
    keeps the train split's labels) or, without one, of ``class_root``.
    """
    class_root = Path(class_root)
    for candidate in (class_root / "classes.txt", class_root.parent / "classes.txt"):
        if candidate.is_file():
            names = [l.strip() for l in candidate.read_text().splitlines() if l.strip()]
            if names:
                return names
    source = Path(fallback) if fallback is not None else class_root
    names = class_folders(source)
    if not names:
        raise FileNotFoundError(f"no class folders (and no classes.txt) in {source}")
    return names


class BadImageError(ValueError, RuntimeError):
    """An image file that cannot be decoded (a user error naming the file; still a
    RuntimeError for code that caught the earlier type)."""


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (``I;16*``, or ``I`` holding 0..65535) scaled to 8 bits,
    ``round(v / 257)``: ``convert("L")`` would clip every value above 255 to white."""
    if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return img
    values = np.asarray(img)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"{img.mode} image with values {values.min()}..{values.max()}: "
                         f"only 8- and 16-bit images are supported")
    return Image.fromarray(np.round(values.astype(np.float64) / 257).astype(np.uint8), "L")


def open_image(path: str | os.PathLike, in_channels: int) -> Image.Image:
    """Decode an image as ``L`` (1 channel) or ``RGB``; a clear error names a corrupt file.

    The EXIF orientation is applied, as labelme does when it shows an image: an annotation
    (and its mask from ``labelme_to_mask``) lives in that rotated frame. 16-bit greyscale
    images are scaled to 8 bits (:func:`to_8bit`).
    """
    try:
        with Image.open(path) as img:
            img = to_8bit(ImageOps.exif_transpose(img))
            return img.convert("L" if in_channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"cannot decode image {path}: {exc}") from exc


_EXIF_ORIENTATION = 0x0112


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`open_image` decodes it (EXIF-rotated), read
    from the file header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):   # quarter turns
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"cannot decode image {path}: {exc}") from exc


def is_image_file(path: Path) -> bool:
    """An image by its extension; hidden files (macOS ``._*`` resource forks, editors'
    temporary files) are skipped like hidden folders."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_image_sizes(root: str | os.PathLike, rels: Sequence[str], size: int | None,
                      why: str) -> None:
    """Every ``root/rel`` has one size, read from the file headers: ``size × size`` if
    ``size`` is given (``why`` says what needs it), else the first image's. A ValueError
    names the first file that differs (a batch of mixed sizes cannot be stacked)."""
    root = Path(root)
    expected = (size, size) if size is not None else None
    for rel in rels:
        found = image_size(root / rel)
        if expected is None:
            expected, first = found, root / rel
            continue
        if found != expected:
            need = (f"{why} needs {size}x{size} images" if size is not None else
                    f"{first} is {expected[0]}x{expected[1]} (images of one size are needed "
                    f"unless the dataset resizes them)")
            raise ValueError(f"image {root / rel} is {found[0]}x{found[1]}, but {need}")


class ImageFolderDataset(Dataset):
    """Yields :class:`~loaders.batch.PlainBatch` ``(image, label, path)`` with ``path =
    "<class>/<file>"``.

    Args:
        root: folder holding one sub-folder per class.
        transform: applied to the decoded PIL image.
        in_channels: 1 decodes grayscale, 3 decodes RGB.
        classes: label order; default :func:`read_classes`.
        allow_empty: accept classes without images (sifted folders, test splits); otherwise
            an empty or missing class folder is an error. ``empty_classes`` lists them.

    A sub-folder of ``root`` that is not one of ``classes`` is an error: its images would
    otherwise be dropped silently, or, with a class list of its own, get shifted labels.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 in_channels: int = 3, classes: Sequence[str] | None = None,
                 allow_empty: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        self.classes = list(classes) if classes is not None else read_classes(self.root)
        self.transform = transform
        self.in_channels = in_channels
        unknown = [name for name in class_folders(self.root) if name not in self.classes]
        if unknown:
            raise ValueError(f"{self.root} has folder(s) {unknown[:5]} that are not classes of "
                             f"the dataset (label order: {self.classes[:10]}"
                             f"{' ...' if len(self.classes) > 10 else ''}); add them to "
                             f"classes.txt or remove them")
        self.samples: list[tuple[str, int]] = []
        self.empty_classes: list[str] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            files = sorted(f for f in folder.iterdir()
                           if is_image_file(f)) if folder.is_dir() else []
            if not files and not allow_empty:
                raise ValueError(f"class {label} ({name!r}) has no images in {folder}")
            if not files:
                self.empty_classes.append(name)
            self.samples += [(f"{name}/{f.name}", label) for f in files]
        if not self.samples:
            raise ValueError(f"no images found under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def load(self, index: int) -> tuple[Image.Image, int, str]:
        rel, label = self.samples[index]
        return open_image(self.root / rel, self.in_channels), label, rel

    def __getitem__(self, index: int) -> PlainBatch:
        image, label, rel = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return PlainBatch(image, label, rel)


class MaskedImageFolder(ImageFolderDataset):
    """Yields :class:`~loaders.batch.Batch` ``(image, label, path, mask, annotated)``.

    Masks are matched by relative path: ``mask_root/<class>/<stem>.png`` for
    ``root/<class>/<stem>.<ext>``. ``mask`` is a ``[1, H, W]`` float tensor of codes
    ``MASK_OBJECT`` (1), ``MASK_BACKGROUND`` (0) and ``MASK_IGNORE`` (2, pixels to leave
    out of the spatial loss), see :func:`decode_mask`, transformed jointly with the image
    (torchvision v2 with ``tv_tensors.Mask``: nearest-neighbour, so codes stay codes).
    An image without a mask is returned with ``annotated = False`` and an all-zero mask,
    so its spatial penalty is zero.

    Checked here, before any training step: every mask has its image's size (else a
    ValueError naming both files and sizes), and mask files that match no image (orphans,
    e.g. masks of another split or of renamed images) are reported in one warning.
    """

    def __init__(self, root, mask_root, transform=None, in_channels=3, classes=None,
                 allow_empty=False, require_any=True):
        super().__init__(root, transform, in_channels, classes, allow_empty)
        self.mask_root = Path(mask_root)
        self.mask_paths = [self.mask_path(rel) for rel, _ in self.samples]
        self.mask_paths = [p if p.is_file() else None for p in self.mask_paths]
        self.num_annotated = sum(p is not None for p in self.mask_paths)
        if require_any and self.num_annotated == 0:
            example = self.samples[0][0]
            raise FileNotFoundError(
                f"no mask in {self.mask_root} matches any image of {self.root}; e.g. for image "
                f"{self.root / example} the mask looked for was {self.mask_path(example)}")
        self._check_sizes()
        self._warn_orphans()

    def _check_sizes(self) -> None:
        bad = []
        for (rel, _), path in zip(self.samples, self.mask_paths):
            if path is not None:
                mask_size, size = image_size(path), image_size(self.root / rel)
                if mask_size != size:
                    bad.append(f"mask {path} is {mask_size[0]}x{mask_size[1]} (WxH) but its "
                               f"image {self.root / rel} is {size[0]}x{size[1]}")
        if bad:
            more = f" (and {len(bad) - 1} more mismatched masks)" if len(bad) > 1 else ""
            raise ValueError(bad[0] + more + "; masks must have their image's size")

    def _warn_orphans(self) -> None:
        if not self.mask_root.is_dir():
            return
        used = {p.resolve() for p in self.mask_paths if p is not None}
        orphans = sorted(str(p.relative_to(self.mask_root)) for p in self.mask_root.rglob("*")
                         if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                         and p.resolve() not in used)
        if orphans:
            warnings.warn(f"{len(orphans)} mask file(s) in {self.mask_root} match no image of "
                          f"{self.root} and are not used, e.g. {orphans[:5]} (a mask "
                          f"<class>/<stem>.png belongs to the image <class>/<stem>.<ext>)",
                          stacklevel=3)

    def mask_path(self, rel: str) -> Path:
        return self.mask_root / Path(rel).with_suffix(".png")

    def __getitem__(self, index: int) -> Batch:
        image, label, rel = self.load(index)
        path = self.mask_paths[index]
        if path is None:
            mask = torch.zeros(1, image.height, image.width, dtype=torch.uint8)
        else:
            m = open_image(path, 1)
            if m.size != image.size:
                raise ValueError(f"mask {path} is {m.size[0]}x{m.size[1]} but its image "
                                 f"{self.root / rel} is {image.size[0]}x{image.size[1]}")
            mask = torch.from_numpy(decode_mask(m))[None]
        mask = tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return Batch(image, label, rel, mask.as_subclass(torch.Tensor).float(), path is not None)
