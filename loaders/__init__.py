"""Datasets and data loaders: ``load_data`` / ``load_data_mask`` (released API)."""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from loaders.batch import Batch, PlainBatch, batch_masks, require_masks
from loaders.folder import (MASK_BACKGROUND, MASK_IGNORE, MASK_OBJECT, BadImageError,
                            ImageFolderDataset, MaskedImageFolder, check_image_sizes,
                            decode_mask, read_classes)
from loaders.memory import DATA_MODES, MemoryDataset, MemoryLoader, use_memory
from loaders.transforms import resizes
from loaders.registry import (DATASETS, FOLDER, DatasetSpec, data_names, get_spec,
                              register_dataset)
from loaders.transforms import build_transform, normalization_stats
from utils.runtime import seed_worker

__all__ = [
    "MASK_BACKGROUND", "MASK_IGNORE", "MASK_OBJECT", "decode_mask", "Batch", "PlainBatch",
    "BadImageError", "batch_masks", "require_masks",
    "DATA_MODES", "DATASETS", "FOLDER", "DatasetSpec", "ImageFolderDataset", "MaskedImageFolder",
    "MemoryDataset", "MemoryLoader", "build_dataset", "build_transform", "normalization_stats",
    "data_names", "dataset_classes", "require_split", "get_spec", "load_data", "load_data_mask", "make_loader",
    "read_classes", "register_dataset", "resolve_split", "use_memory", "annotated_eval_tensors",
]


def resolve_split(data_path: str | os.PathLike, data_type: str) -> Path:
    """``data_path/data_type`` if that folder exists, else ``data_path`` (a class-folder root,
    e.g. a folder of sifted images)."""
    data_path = Path(data_path)
    if not data_path.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_path}")
    split = data_path / data_type
    return split if split.is_dir() else data_path


def require_split(data_path: str | os.PathLike, data_type: str) -> None:
    """Refuse a ``data_path`` without the ``data_type`` split folder, where the fallback of
    :func:`resolve_split` would evaluate a folder of training images as that split (test
    accuracy and the best-model choice computed on the training set)."""
    data_path = Path(data_path)
    if (data_path / data_type).is_dir() or not data_path.is_dir():
        return
    if data_path.name == data_type:   # the split folder itself (the released test.py form)
        return
    if data_path.name == "train" or (data_path / "train").is_dir():
        where = (f"it looks like a training split itself: point at the dataset root "
                 f"{data_path.parent}" if data_path.name == "train" else
                 f"it has train/ but no {data_type}/")
    else:
        where = "it holds class folders, neither train/ nor test/"
    raise ValueError(f"data folder {data_path} has no {data_type}/ split ({where}); the "
                     f"{data_type} accuracy would be computed on these images; give a "
                     f"dataset root holding train/ and {data_type}/")


def dataset_classes(data_path: str | os.PathLike, data_type: str = "train") -> list[str]:
    """The label order of ``data_type``, the same for every split of a dataset.

    ``classes.txt`` (in the split folder, then in ``data_path``); else the sorted class
    folders of ``data_path/train`` when that split exists, else those of the split folder
    (see :func:`resolve_split`).
    """
    root = resolve_split(data_path, data_type)
    train = Path(data_path) / "train"
    fallback = train if root != Path(data_path) and train.is_dir() else None
    return read_classes(root, fallback)


def build_dataset(data_name: str, data_path, data_type: str = "train", in_channels=None,
                  train_transform: bool | None = None, mask_dir=None, allow_empty=False,
                  require_masks=True, data_mode: str = "folder",
                  split_required: bool | None = None) -> Dataset:
    """The dataset for ``data_type``; ``train_transform`` defaults to ``data_type == 'train'``.

    ``split_required`` (default: for ``data_type == 'test'``): refuse a ``data_path``
    without that split folder (:func:`require_split`) instead of reading ``data_path``
    itself as the split. ``data_name`` ``folder``: settings from the data
    (:mod:`loaders.custom`).

    Labels follow :func:`dataset_classes`, so a test split evaluates with the train split's
    labels. A class without images is an error in the ``train`` split (unless
    ``allow_empty``); in any other split it is allowed with a warning: it is evaluated with
    the right labels, and its per-class accuracy is undefined.

    ``data_mode``: ``folder`` decodes and transforms image by image; ``memory`` decodes the
    split once and augments whole batches (:mod:`loaders.memory`, up to 64 px); ``auto`` picks
    ``memory`` where it applies.
    """
    if split_required is None:
        split_required = data_type == "test"
    if split_required:
        require_split(data_path, data_type)
    spec = get_spec(data_name, data_path, in_channels)
    in_channels = in_channels or spec.in_channels
    train = data_type == "train" if train_transform is None else train_transform
    memory = use_memory(spec, data_mode)
    transform = None if memory else build_transform(spec, train, in_channels)
    root = resolve_split(data_path, data_type)
    classes = dataset_classes(data_path, data_type)
    allow = allow_empty or data_type != "train"
    if mask_dir is None:
        dataset = ImageFolderDataset(root, transform, in_channels, classes, allow_empty=allow)
    else:
        dataset = MaskedImageFolder(root, mask_dir, transform, in_channels, classes,
                                    allow_empty=allow, require_any=require_masks)
    if not memory and not resizes(spec):     # the memory path checks while decoding
        # training crops spec.image_size: another size would train on crops and test on
        # whole images
        check_image_sizes(root, [rel for rel, _ in dataset.samples],
                          spec.image_size if train else None,
                          f"--data_name {spec.name} (training crops, not resized)")
    if dataset.empty_classes and not allow_empty:
        warnings.warn(f"{root}: no images of class(es) {dataset.empty_classes[:10]} "
                      f"({len(dataset.empty_classes)} of {len(classes)}); the other classes "
                      f"keep their labels {classes[:10]}{' ...' if len(classes) > 10 else ''}",
                      stacklevel=2)
    return MemoryDataset(dataset, spec, train) if memory else dataset


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int = 0,
                device: torch.device | None = None, seed: int = 0,
                sampler: Sampler | None = None,
                drop_last: bool = False) -> DataLoader | MemoryLoader:
    """A DataLoader with seeded shuffling and workers, pinned memory on CUDA (for a
    :class:`MemoryDataset`: a :class:`MemoryLoader`, which needs no workers).

    Workers are not persistent: they are re-created each epoch from the loader's generator,
    which :func:`train.fit` reseeds per epoch, so a resumed run augments exactly as an
    uninterrupted one.
    """
    if isinstance(dataset, MemoryDataset):
        return MemoryLoader(dataset, batch_size, shuffle, device, seed, sampler, drop_last)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, pin_memory=device is not None and device.type == "cuda",
        worker_init_fn=seed_worker, generator=generator, drop_last=drop_last)


def load_data(data_name: str, data_path, data_type: str = "train", batch_size: int | None = None,
              workers: int = 0, device=None, seed: int = 0, in_channels=None,
              shuffle: bool | None = None, train_transform: bool | None = None,
              allow_empty: bool = False) -> DataLoader:
    """Released API: a loader of ``(image, label, relative_path)`` batches
    (:class:`~loaders.batch.PlainBatch`) for ``data_type``."""
    dataset = build_dataset(data_name, data_path, data_type, in_channels, train_transform,
                            allow_empty=allow_empty)
    shuffle = data_type == "train" if shuffle is None else shuffle
    return make_loader(dataset, batch_size or get_spec(data_name, data_path).batch_size, shuffle,
                       workers, device, seed)


def load_data_mask(data_name: str, data_path, mask_path, data_type: str = "train",
                   batch_size: int | None = None, workers: int = 0, device=None, seed: int = 0,
                   in_channels=None, shuffle: bool | None = None) -> DataLoader:
    """A loader of ``(image, label, relative_path, mask, annotated)`` batches
    (:class:`~loaders.batch.Batch`); see MaskedImageFolder."""
    dataset = build_dataset(data_name, data_path, data_type, in_channels, mask_dir=mask_path)
    shuffle = data_type == "train" if shuffle is None else shuffle
    return make_loader(dataset, batch_size or get_spec(data_name, data_path).batch_size, shuffle,
                       workers, device, seed)


def annotated_eval_tensors(dataset: MaskedImageFolder | MemoryDataset,
                           spec: DatasetSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, masks)`` of the annotated images of a training set built with
    masks, stacked, with evaluation transforms (no augmentation): a view of the set already
    built, so nothing is listed or decoded twice in memory mode (the paper's budget is a few
    hundred images)."""
    view = copy.copy(dataset)          # shares the samples and the decoded tensors
    if isinstance(dataset, MemoryDataset):
        view.train = False
        one = view.batch(dataset.annotated.nonzero().flatten())
        return one.image, one.label, one.mask
    view.transform = build_transform(spec, False, dataset.in_channels)
    items = [view[i] for i, path in enumerate(dataset.mask_paths) if path is not None]
    return (torch.stack([it.image for it in items]), torch.tensor([it.label for it in items]),
            torch.stack([it.mask for it in items]))
