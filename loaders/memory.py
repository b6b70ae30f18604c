"""Datasets up to 64 px kept decoded in memory and augmented in whole batches.

A split is decoded once, by the folder dataset's own code (file list, labels, ``open_image``,
mask matching and checks), into a uint8 tensor ``[N, C, S, S]`` — plus ``[N, 1, S, S]`` masks
and annotated flags when masks are used. The arrays are cached beside the data
(``<split>/.decoded_<C>ch.npz``, ``<mask_root>/.decoded_masks_<id>.npz``) under a key made of
every file's path, size, modification time, inode and status-change time (ctime) and of
``loaders/folder.py``'s source, so a changed folder or a changed decoder rebuilds them. The
ctime and inode catch a file replaced by one of the same size and mtime (``cp -p``,
``rsync -a``): no tool can set them back.

:class:`MemoryLoader` yields what a DataLoader over the folder dataset yields — a
:class:`~loaders.batch.PlainBatch`, or a :class:`~loaders.batch.Batch` with masks — but
draws the released augmentation for a whole batch at once and applies it on the batch's
device: a crop of the 4-px zero-padded image at offsets uniform in ``0..8`` on each axis
(``v2.RandomCrop(S, padding=4)``), then, where the dataset allows it, a horizontal flip with
probability 1/2 (``v2.RandomHorizontalFlip``); masks take the same crop and flip. Images are
then scaled and normalised with the operations of :func:`loaders.transforms.build_transform`,
so evaluation batches equal the per-image pipeline's bit for bit.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from loaders import folder as folder_module
from loaders.batch import Batch, PlainBatch
from loaders.folder import ImageFolderDataset, MaskedImageFolder
from loaders.registry import DatasetSpec
from loaders.transforms import normalization_stats
from utils.io import atomic_write

MAX_SIZE = 64
PADDING = 4
DATA_MODES = ("auto", "memory", "folder")
CACHE_VERSION = 2


def use_memory(spec: DatasetSpec, data_mode: str) -> bool:
    """Whether ``data_mode`` (``auto | memory | folder``) selects the in-memory path for ``spec``.

    ``auto`` picks it for datasets up to 64 px that are not resized (all but STL-10 and
    mini-ImageNet); ``memory`` for a larger dataset is an error.
    """
    fits = spec.size <= MAX_SIZE and spec.input_size in (None, spec.image_size)
    if data_mode == "auto":
        return fits
    if data_mode == "folder":
        return False
    if data_mode == "memory":
        if not fits:
            raise ValueError(f"data_mode 'memory': {spec.name} is resized to {spec.size} px; the "
                             f"in-memory path serves datasets up to {MAX_SIZE} px that are not "
                             f"resized (use 'auto' or 'folder')")
        return True
    raise ValueError(f"unknown data_mode {data_mode!r}; valid: {', '.join(DATA_MODES)}")


# -- decoding and the cache --------------------------------------------------------------------
def decode_images(folder: ImageFolderDataset, size: int) -> np.ndarray:
    """Every image of ``folder`` as uint8 ``[N, C, size, size]``, in ``folder.samples`` order."""
    out = np.empty((len(folder), folder.in_channels, size, size), np.uint8)
    for i in range(len(folder)):
        image, _, rel = folder.load(i)
        if image.size != (size, size):
            raise ValueError(f"image {folder.root / rel} is {image.size[0]}x{image.size[1]}, but "
                             f"the in-memory path needs {size}x{size} images; use "
                             f"--data_mode folder for the per-image pipeline")
        pixels = np.asarray(image)
        out[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return out


def decode_masks(folder: MaskedImageFolder, size: int) -> np.ndarray:
    """Masks as uint8 ``[N, 1, size, size]``; all zero for images without a mask."""
    out = np.zeros((len(folder), 1, size, size), np.uint8)
    for i, path in enumerate(folder.mask_paths):
        if path is None:
            continue
        mask = folder[i].mask        # decoded and checked by the folder dataset
        if mask.shape != (1, size, size) or not torch.equal(mask, mask.round()) \
                or mask.min() < 0 or mask.max() > 255:
            raise ValueError(f"mask {path}: expected a [1, {size}, {size}] mask of integer "
                             f"values in 0..255, got shape {list(mask.shape)}, values "
                             f"{mask.min().item()}..{mask.max().item()}")
        out[i] = mask.numpy().astype(np.uint8)
    return out


def files_key(files: list[Path | None], *settings) -> str:
    """A digest of ``settings``, the decoder's source and every file's path, size, mtime,
    inode and ctime (``None``: no file).

    Only ``stat`` is read, so a cached load stays far cheaper than decoding. Measured on
    5000 32-px RGB PNGs (2-core machine, one thread): :func:`decode_images` 1.74-1.86 s, a
    cached :func:`load_images` 0.13 s (14x faster). A hash of every file's bytes would add
    0.15-0.19 s and leave it about 6x faster, which is why the key uses the inode and
    ctime (changed by any rewrite or rename; ``cp -p`` and ``rsync -a`` cannot restore
    them) rather than the bytes.
    """
    digest = hashlib.sha256(repr((CACHE_VERSION, settings)).encode())
    digest.update(Path(folder_module.__file__).read_bytes())
    for path in files:
        if path is None:
            digest.update(b"-\n")
        else:
            st = os.stat(path)
            digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\t"
                          f"{st.st_ctime_ns}\n".encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> np.ndarray | None:
    """The cached array if ``path`` holds one for ``key``; None if it is missing, unreadable
    or built from other files."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["data"] if str(stored["key"]) == key else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def cached(path: Path, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored in ``path`` under ``key``, else ``build()`` — written to ``path``
    atomically (a warning, not an error, if the folder is read-only)."""
    data = _read_cache(path, key)
    if data is not None:
        return data
    data = build()
    try:
        with atomic_write(path) as f:
            np.savez(f, key=np.array(key), data=data)
    except OSError as exc:
        warnings.warn(f"cannot write the decoded-data cache {path} ({exc}); the data stays in "
                      f"memory for this run only")
    return data


def load_images(folder: ImageFolderDataset, size: int) -> np.ndarray:
    key = files_key([folder.root / rel for rel, _ in folder.samples], folder.in_channels, size)
    path = folder.root / f".decoded_{folder.in_channels}ch.npz"

    def build():
        print(f"decoding {len(folder)} images of {folder.root} into memory (cached in {path})",
              file=sys.stderr, flush=True)
        return decode_images(folder, size)
    return cached(path, key, build)


def load_masks(folder: MaskedImageFolder, size: int) -> np.ndarray:
    if folder.num_annotated == 0:        # nothing to decode (and maybe no mask folder to cache in)
        return np.zeros((len(folder), 1, size, size), np.uint8)
    images = [folder.root / rel for rel, _ in folder.samples]
    key = files_key(images + folder.mask_paths, folder.in_channels, size)
    split_id = hashlib.sha256(str(folder.root.resolve()).encode()).hexdigest()[:12]
    path = folder.mask_root / f".decoded_masks_{split_id}.npz"
    return cached(path, key, lambda: decode_masks(folder, size))


# -- batch augmentation ------------------------------------------------------------------------
def draw_augmentation(n: int, hflip: bool, generator: torch.Generator | None = None,
                      padding: int = PADDING) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(top, left, flip)`` for ``n`` images: crop offsets uniform in ``0..2·padding`` and a
    flip with probability 1/2 (never without ``hflip``), as the per-image transforms draw them."""
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return top, left, flip


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = PADDING) -> torch.Tensor:
    """Per image ``b`` of ``x`` ``[B, C, H, W]``: zero-pad by ``padding``, crop ``H × W`` at
    ``(top[b], left[b])``, mirror left–right if ``flip[b]``. One gather for the whole batch."""
    b, c, h, w = x.shape
    rows = top[:, None] + torch.arange(h, device=x.device)                          # [B, H]
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)           # [B, W]
    index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(b, 1, h * w)
    padded = F.pad(x, (padding,) * 4).flatten(2)
    return padded.gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` → float, with the operations of ``v2.ToDtype(scale=True)`` and
    ``v2.Normalize`` (so the values are identical)."""
    return x.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Run the block with one intra-op thread if ``device`` is the CPU. A batch's augmentation
    is a few memory-bound passes over well under a megabyte: one thread does them in about a
    millisecond, while handing each pass to a second thread stalled it for 30–100 ms on a
    loaded 2-core machine."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class MemoryDataset(Dataset):
    """A decoded split built from a folder dataset without a transform.

    Attributes: ``images`` uint8 ``[N, C, S, S]``, ``labels`` int64 ``[N]``, ``paths``
    (``"<class>/<file>"``); with masks, ``masks`` uint8 ``[N, 1, S, S]`` and ``annotated``
    bool ``[N]``. ``train`` turns on the augmentation in :meth:`batch`. Indexing gives the
    per-sample tuple of the folder dataset (augmented with the global RNG, as there).
    """

    def __init__(self, folder: ImageFolderDataset, spec: DatasetSpec, train: bool):
        if folder.transform is not None:
            raise ValueError("MemoryDataset decodes raw images: build the folder dataset "
                             "without a transform")
        self.root, self.classes, self.samples = folder.root, folder.classes, folder.samples
        self.in_channels, self.spec, self.train = folder.in_channels, spec, train
        self.hflip = spec.hflip
        mean, std = normalization_stats(spec, folder.in_channels)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.images = torch.from_numpy(load_images(folder, spec.size))
        self.labels = torch.tensor(folder.targets, dtype=torch.int64)
        self.paths = [rel for rel, _ in folder.samples]
        self.masks = self.annotated = None
        if isinstance(folder, MaskedImageFolder):
            self.mask_root, self.mask_paths = folder.mask_root, folder.mask_paths
            self.num_annotated = folder.num_annotated
            self.masks = torch.from_numpy(load_masks(folder, spec.size))
            self.annotated = torch.tensor([p is not None for p in folder.mask_paths])
        self._on_device: dict[torch.device, tuple] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def stored(self, device: torch.device) -> tuple:
        """``(images, masks, mean, std)`` on ``device``, copied there once."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = tuple(
                t.to(device) if t is not None else None
                for t in (self.images, self.masks, self.mean, self.std))
        return self._on_device[device]

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> PlainBatch | Batch:
        """The samples ``index`` as one batch on ``device``, augmented if ``train`` with
        draws from ``generator`` (the global RNG if None)."""
        images, masks, mean, std = self.stored(device)
        with one_cpu_thread(images.device):
            on_device = index.to(images.device)
            x = images[on_device]
            m = masks[on_device] if masks is not None else None
            if self.train:
                top, left, flip = (t.to(images.device) for t in
                                   draw_augmentation(len(index), self.hflip, generator))
                x = crop_flip(x, top, left, flip)
                m = crop_flip(m, top, left, flip) if m is not None else None
            image = normalize(x, mean, std)
            label = self.labels[index].to(images.device)
            path = [self.paths[i] for i in index.tolist()]
            if m is None:
                return PlainBatch(image, label, path)
            return Batch(image, label, path, m.float(), self.annotated[index])

    def __getitem__(self, index: int) -> PlainBatch | Batch:
        one = self.batch(torch.tensor([index]))
        if self.masks is None:
            return PlainBatch(one.image[0], int(one.label[0]), one.path[0])
        return Batch(one.image[0], int(one.label[0]), one.path[0], one.mask[0],
                     bool(one.annotated[0]))


class MemoryLoader:
    """Batches of a :class:`MemoryDataset`, iterated like ``DataLoader(dataset, batch_size,
    shuffle, sampler=sampler, drop_last=drop_last)`` with ``num_workers=0``.

    The order comes from ``sampler`` if given (e.g. a ``DistributedSampler``, which shards
    it), else from a permutation drawn from ``generator`` (``shuffle``), else the dataset
    order; a ``batch_sampler`` (:meth:`with_batch_sampler`) gives whole batches instead. Each
    pass draws its augmentation from a generator seeded by ``generator`` (and the
    sampler's rank) at its start, so reseeding ``generator`` per epoch, as :func:`train.fit`
    does, reproduces an epoch exactly — a resumed run equals an uninterrupted one.
    """

    def __init__(self, dataset: MemoryDataset, batch_size: int, shuffle: bool = False,
                 device: torch.device | None = None, seed: int = 0,
                 sampler: Sampler | None = None, drop_last: bool = False):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.sampler, self.drop_last = sampler, drop_last
        self.batch_sampler: Sampler[list[int]] | None = None
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def with_batch_sampler(self, batch_sampler: Sampler[list[int]]) -> "MemoryLoader":
        """This loader (same dataset, device and generator) with batches from
        ``batch_sampler``, e.g. :class:`loaders.replay.ReplayBatchSampler`."""
        loader = copy.copy(self)
        loader.batch_sampler = batch_sampler
        return loader

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self) -> torch.Tensor:
        if self.sampler is not None:
            return torch.as_tensor(list(self.sampler), dtype=torch.int64)
        if self.shuffle:
            return torch.randperm(len(self.dataset), generator=self.generator)
        return torch.arange(len(self.dataset))

    def batches(self):
        if self.batch_sampler is not None:
            return (torch.as_tensor(b, dtype=torch.int64) for b in self.batch_sampler)
        order = self.order()
        return (order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self)))

    def __iter__(self):
        augmentation = torch.Generator()
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        augmentation.manual_seed(seed + getattr(self.sampler, "rank", 0))
        for index in self.batches():
            yield self.dataset.batch(index, self.device, augmentation)
