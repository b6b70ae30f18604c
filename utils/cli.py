"""Command-line plumbing shared by the entry scripts: help format, error exit, the flags and
model loading of the scripts that read a trained classifier."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import torch

TRACEBACK_ENV = "MODEL_DOCTOR_TRACEBACK"
# Mistakes in the command line or the files it names. The code raises these with a message
# naming the argument or file, so the message alone tells the user what to fix.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               ValueError, LookupError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: …)`` to each flag's help unless the help already states its
    default in words (``(default: the dataset's)``), so every default is shown once."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def run_main(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> None:
    """Parse the command line, run ``main(args)`` and exit.

    A user error (:data:`USER_ERRORS`) prints ``<prog>: error: <message>`` on one line to
    stderr and exits with status 1, like argparse's own usage errors (status 2);
    ``MODEL_DOCTOR_TRACEBACK=1`` lets the exception through with its traceback. Any other
    exception is a bug and keeps its traceback. An ``int`` returned by ``main`` is the exit
    status.
    """
    if parser.epilog is None:
        parser.epilog = f"Errors print one line; {TRACEBACK_ENV}=1 shows the traceback."
    args = parser.parse_args(argv)
    try:
        status = main(args)
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
            raise
        text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
        print(f"{parser.prog}: error: {' '.join(text.split()) or type(exc).__name__}",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


def add_model_data_args(p: argparse.ArgumentParser, model_path: str | None = None) -> None:
    """``--model_name --data_name --in_channels --num_classes --stem`` (released names) and,
    if ``model_path`` is given, ``--model_path`` with that default."""
    import loaders
    import models
    p.add_argument("--model_name", default="resnet34", choices=sorted(models.MODELS),
                   help="network architecture")
    p.add_argument("--data_name", default="decoy_digits", choices=sorted(loaders.DATASETS),
                   help="dataset: sets image size, normalisation and augmentation")
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
