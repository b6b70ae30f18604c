"""Smoke-test the model zoo: ``python -m models [--num_classes N] [--image_size PX]``.

Prints every registered model with its parameter count, the output shape of one forward
pass on a random 2x3xPXxPX batch and its time; exits non-zero if any model fails.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from models import MODELS, default_stem, load_model


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_classes", type=int, default=10,
                        help="number of output logits (default: %(default)s)")
    parser.add_argument("--image_size", type=int, default=32,
                        help="input size in pixels; picks the stem (small up to 64 px, "
                             "imagenet above) (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> int:
    stem = default_stem(args.image_size)
    print(f"stem={stem}, input 2x3x{args.image_size}x{args.image_size}, "
          f"{args.num_classes} classes")
    print(f"{'model':<16} {'params (M)':>10}  {'output':<18} {'time (ms)':>9}")
    failed = []
    for name in sorted(MODELS):
        try:
            model = load_model(name, 3, args.num_classes, image_size=args.image_size).eval()
            params = sum(p.numel() for p in model.parameters())
            x = torch.randn(2, 3, args.image_size, args.image_size)
            start = time.perf_counter()
            with torch.no_grad():
                out = model(x)
            elapsed = (time.perf_counter() - start) * 1e3
            print(f"{name:<16} {params / 1e6:>10.2f}  {str(tuple(out.shape)):<18} "
                  f"{elapsed:>9.1f}")
        except Exception:  # report every failing model, then fail once at the end
            failed.append(name)
            print(f"{name:<16} FAILED")
            traceback.print_exc()
    if failed:
        print(f"{len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
