"""Entry-point setup shared by every script that builds or reads a classifier.

The model/data flags (released names) are declared once, by :func:`add_model_data_args`;
:func:`setup_model` turns them into a :class:`Setup` — the dataset spec, the class list, the
resolved channel and class counts and the network — without changing ``args``.
:func:`load_trained_model` is the one loader of a trained classifier and
:func:`resolved_args` the copy of ``args`` that run records (``args.json``, checkpoints)
keep, with the resolved counts filled in.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

import loaders
import models
from utils.checkpoint import load_weights


def add_model_data_args(p: argparse.ArgumentParser, model_path: str | None = None) -> None:
    """``--model_name --data_name --in_channels --num_classes --stem`` (released names) and,
    if ``model_path`` is given, ``--model_path`` with that default."""
    p.add_argument("--model_name", default="resnet34", choices=sorted(models.MODELS),
                   help="network architecture")
    p.add_argument("--data_name", default="decoy_digits", choices=loaders.data_names(),
                   help="dataset: sets image size, normalisation and augmentation; 'folder': "
                        "your own images, settings read from the training split")
    p.add_argument("--in_channels", type=int, default=None,
                   help="image channels (default: the dataset's; 3 for folder)")
    p.add_argument("--image_size", type=int, default=None,
                   help="image size in px, checked against the dataset's (default: the "
                        "dataset's; for folder, the training images')")
    p.add_argument("--num_classes", type=int, default=None,
                   help="number of classes (default: from classes.txt); must match the data")
    p.add_argument("--stem", default=None, choices=models.STEMS,
                   help="network stem (default: small up to 64 px, imagenet above)")
    if model_path is not None:
        p.add_argument("--model_path", default=model_path, help="trained weights")


@dataclass(frozen=True)
class Setup:
    """What the model/data flags resolve to.

    ``in_channels``: ``--in_channels`` or the dataset's; ``num_classes``: ``--num_classes``
    or the length of ``classes``; ``model``: ``--model_name`` built for them (None from
    :func:`resolve`).
    """
    spec: loaders.DatasetSpec
    classes: list[str]
    in_channels: int
    num_classes: int
    model: nn.Module | None = None


def dataset_spec(args: argparse.Namespace) -> loaders.DatasetSpec:
    """The spec of ``--data_name`` (``folder``: read from ``--data_dir``/``--data_path``);
    an ``--image_size`` that contradicts it is an error."""
    root = getattr(args, "data_dir", None) or getattr(args, "data_path", None)
    spec = loaders.get_spec(args.data_name, root, args.in_channels)
    size = getattr(args, "image_size", None)
    if size is not None and size != spec.image_size:
        raise ValueError(f"--image_size {size} but --data_name {args.data_name} has "
                         f"{spec.image_size} px images")
    return spec


def input_channels(args: argparse.Namespace) -> int:
    """``--in_channels``, or the dataset's."""
    return args.in_channels or dataset_spec(args).in_channels


def resolve(args: argparse.Namespace, classes: Sequence[str] | None = None,
            source: str = "the data", num_classes: int | None = None) -> Setup:
    """The model/data flags of ``args`` for data listing ``classes`` (``source`` names it in
    errors). A ``--num_classes`` that contradicts the class list is an error; without a class
    list the count is ``--num_classes``, else ``num_classes`` (e.g. a checkpoint's record)."""
    spec = dataset_spec(args)
    classes = list(classes or [])
    count = args.num_classes or len(classes) or num_classes
    if classes and count != len(classes):
        raise ValueError(f"--num_classes {args.num_classes} but {source} has "
                         f"{len(classes)} classes")
    if not count:
        raise ValueError("--num_classes is needed: neither the data nor the checkpoint "
                         "records the number of classes")
    return Setup(spec, classes, args.in_channels or spec.in_channels, count)


def setup_model(args: argparse.Namespace, classes: Sequence[str] | None = None, *,
                weights: str | None = None, device: torch.device | None = None,
                source: str = "the data", num_classes: int | None = None) -> Setup:
    """:func:`resolve`, then ``--model_name`` built for it (with ``--stem``), loaded from
    ``weights`` if given and moved to ``device`` if given."""
    setup = resolve(args, classes, source, num_classes)
    model = models.load_model(args.model_name, setup.in_channels, setup.num_classes,
                              image_size=setup.spec.size, stem=args.stem)
    if weights is not None:
        load_weights(model, weights, args.model_name)
    return dataclasses.replace(setup, model=model.to(device) if device is not None else model)


def load_trained_model(args: argparse.Namespace, classes: Sequence[str] | None,
                       device: torch.device, path: str | None = None,
                       num_classes: int | None = None) -> Setup:
    """The trained classifier ``path`` (default ``--model_path``) for data listing
    ``classes``, on ``device``; :func:`setup_model` with weights."""
    return setup_model(args, classes, weights=path or args.model_path, device=device,
                       num_classes=num_classes)


def resolved_args(args: argparse.Namespace, setup: Setup) -> argparse.Namespace:
    """A copy of ``args`` with ``in_channels`` and ``num_classes`` resolved, for what records
    the run (``args.json``, checkpoint metadata)."""
    return argparse.Namespace(**{**vars(args), "in_channels": setup.in_channels,
                                 "num_classes": setup.num_classes})
