"""Train a CNN classifier (paper §1): plain cross-entropy, the released recipe.

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), cosine annealing over ``--num_epochs``.
Writes ``model_ori.pth`` (best test accuracy, released behaviour), ``last.pth`` (full state,
``--resume`` continues it when the settings are the same), ``result.json``, ``args.json``,
``epochs.jsonl`` and TensorBoard scalars. The flags are :func:`core.config.train_parser`'s,
the run is :func:`core.engine.run_train`.
"""
from __future__ import annotations

import argparse

from core.config import TrainConfig, train_parser as get_args_parser
from core.engine import run_train
from utils.cli import run_main


def main(args: argparse.Namespace) -> dict:
    return run_train(TrainConfig.from_args(args))


if __name__ == "__main__":
    run_main(main, get_args_parser())
