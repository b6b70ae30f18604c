"""Evaluate a trained classifier: top-1/top-5, per-class accuracy, confusion matrix.

The flags are :func:`core.config.test_parser`'s, the run is :func:`core.engine.run_test`.
"""
from __future__ import annotations

import argparse

from core.config import TestConfig, test_parser as get_args_parser
from core.engine import run_test
from utils.cli import run_main


def main(args: argparse.Namespace) -> dict:
    return run_test(TestConfig.from_args(args))


if __name__ == "__main__":
    run_main(main, get_args_parser())
