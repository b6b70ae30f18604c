"""Smoke-test the model zoo: ``python -m models [--num_classes N] [--image_size PX]``.

Prints every registered model with its parameter count, its number of ``Conv2d`` modules,
the output shape of layer 0 (the last conv) and of the model for one forward pass on a
random 2x3xPXxPX batch, and that pass's time; exits non-zero if any model fails.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from models import MODELS, default_stem, load_model, load_modules
from utils.cli import run_main


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
    print(f"{'model':<16} {'params (M)':>10} {'convs':>5}  {'layer 0':<15} {'output':<10} "
          f"{'time (ms)':>9}")
    failed = []
    for name in sorted(MODELS):
        try:
            model = load_model(name, 3, args.num_classes, image_size=args.image_size).eval()
            params = sum(p.numel() for p in model.parameters())
            convs = load_modules(model)
            layer0 = []
            handle = convs[0][1].register_forward_hook(
                lambda module, inputs, out: layer0.append("x".join(map(str, out.shape[1:]))))
            x = torch.randn(2, 3, args.image_size, args.image_size)
            try:
                start = time.perf_counter()
                with torch.no_grad():
                    out = model(x)
                elapsed = (time.perf_counter() - start) * 1e3
            finally:
                handle.remove()
            print(f"{name:<16} {params / 1e6:>10.2f} {len(convs):>5}  {layer0[0]:<15} "
                  f"{str(tuple(out.shape)):<10} {elapsed:>9.1f}")
        except Exception:  # report every failing model, then fail once at the end
            failed.append(name)
            print(f"{name:<16} FAILED")
            traceback.print_exc()
    if failed:
        print(f"{len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main, get_args_parser())
