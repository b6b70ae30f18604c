"""Flags and model loading shared by the entry scripts that read a trained classifier."""
from __future__ import annotations

import argparse

import torch


def add_model_data_args(p: argparse.ArgumentParser, model_path: str | None = None) -> None:
    """``--model_name --data_name --in_channels --num_classes --stem`` (released names) and,
    if ``model_path`` is given, ``--model_path`` with that default."""
    import loaders
    import models
    p.add_argument("--model_name", default="resnet34", choices=sorted(models.MODELS))
    p.add_argument("--data_name", default="decoy_digits", choices=sorted(loaders.DATASETS))
    p.add_argument("--in_channels", type=int, default=None,
                   help="image channels (default: the dataset's)")
    p.add_argument("--num_classes", type=int, default=None,
                   help="number of classes (default: from classes.txt); must match the data")
    p.add_argument("--stem", default=None, choices=models.STEMS,
                   help="network stem (default: small up to 64 px, imagenet above)")
    if model_path is not None:
        p.add_argument("--model_path", default=model_path, help="trained weights")


def load_trained_model(args: argparse.Namespace, classes, device: torch.device) -> torch.nn.Module:
    """Build ``args.model_name`` for the data's classes and load ``args.model_path``.

    Fills ``args.in_channels``/``args.num_classes`` from the dataset when unset and refuses a
    ``--num_classes`` that contradicts the class list.
    """
    import loaders
    import models
    from utils.checkpoint import load_weights
    spec = loaders.get_spec(args.data_name)
    args.in_channels = args.in_channels or spec.in_channels
    args.num_classes = args.num_classes or len(classes)
    if args.num_classes != len(classes):
        raise ValueError(f"--num_classes {args.num_classes} but the data lists "
                         f"{len(classes)} classes")
    model = models.load_model(args.model_name, args.in_channels, args.num_classes,
                              image_size=spec.size, stem=args.stem)
    load_weights(model, args.model_path, args.model_name)
    return model.to(device)
