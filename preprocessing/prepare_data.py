"""Build a dataset in the layout the loaders read: ``ROOT/{train,test}/<class>/<file>``.

Examples::

    python preprocessing/prepare_data.py --data_name decoy_digits --output data/decoy_digits
    python preprocessing/prepare_data.py --data_name cifar10 --source data/raw/cifar10 \\
        --output data/cifar10 --download
    python preprocessing/prepare_data.py --data_name mnin --source /data/mini-imagenet \\
        --output data/mnin_10 --num_classes_subset 10 --seed 0

Re-running skips files that already exist, so an interrupted run can simply be restarted.
"""
from __future__ import annotations

import argparse
import time

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401

# Importing the format modules registers their converters.
from preprocessing import (  # noqa: E402,F401
    cifar, decoy, digits, mini_imagenet, mnist, photo_backgrounds, stl10, svhn,
)
from preprocessing.common import CONVERTERS  # noqa: E402
from utils.io import refuse_overlap  # noqa: E402
from utils.cli import run_main  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_name", required=True, choices=sorted(CONVERTERS))
    parser.add_argument("--source", default=None,
                        help="folder with the official files (for decoy: a prepared dataset)")
    parser.add_argument("--output", required=True, help="dataset root to write")
    parser.add_argument("--download", action="store_true",
                        help="fetch the official files into --source with torchvision first")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the digits split, the mini-ImageNet split and class "
                             "choice, and the decoy corners and test shades")
    parser.add_argument("--num_classes_subset", type=int, default=0,
                        help="mnin: keep this many random classes (0 = all)")
    parser.add_argument("--train_per_class", type=int, default=480,
                        help="mnin: training images per class, the rest are test")
    parser.add_argument("--plain_output", default=None,
                        help="decoy_*: where the plain dataset is built "
                             "(unset: next to --output, named after the base dataset)")
    parser.add_argument("--decoy_kind", default="shade", choices=decoy.KINDS,
                        help="decoy_*: shade (DecoyMNIST corner square) or texture "
                             "(class texture in the background, the shortcut benchmark's)")
    parser.add_argument("--decoy_strength", type=int, default=decoy.TEXTURE_STRENGTH,
                        help="decoy_* texture: intensity of the background texture (1-255)")
    parser.add_argument("--val_per_class", type=int, default=0,
                        help="decoy_*: training images per class held out as a 'val' split "
                             "with random decoys (for choosing hyperparameters)")
    parser.add_argument("--correlation", type=photo_backgrounds.correlation_arg,
                        default=photo_backgrounds.DEFAULT_CORRELATION,
                        help="photo_*: share of training images on their class's background "
                             "place (0: backgrounds independent of the class)")
    parser.add_argument("--subset_per_class", type=int, default=0,
                        help="decoy_*: keep this many training images per class (0 = all)")
    parser.add_argument("--no_verify", action="store_true",
                        help="skip the check of the per-split counts against the official ones")
    return parser


def main(args: argparse.Namespace):
    converter = CONVERTERS[args.data_name]
    if converter.needs_source and args.source is None:
        raise SystemExit(f"--data_name {args.data_name} needs --source")
    if (args.val_per_class or args.subset_per_class or args.decoy_kind != "shade") \
            and not args.data_name.startswith(("decoy", "photo")):
        raise SystemExit("--decoy_kind, --val_per_class and --subset_per_class are only "
                         "supported for the decoy_* datasets")
    if args.num_classes_subset and args.data_name not in (mini_imagenet.NAME, mini_imagenet.ALIAS):
        raise SystemExit("--num_classes_subset is only supported for mnin (mini_imagenet)")
    try:
        refuse_overlap(args.output, {"--source": args.source,
                                     "--plain_output": args.plain_output}, "--output")
    except ValueError as e:
        raise SystemExit(f"prepare_data.py: error: {e}") from None
    start = time.perf_counter()
    summary = converter.fn(args)
    print(f"{args.data_name}: done in {time.perf_counter() - start:.1f} s -> {summary.root}")
    return summary


if __name__ == "__main__":
    run_main(main, get_args_parser())
