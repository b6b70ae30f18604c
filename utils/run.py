"""Run records: resolved arguments, one JSON line per epoch, TensorBoard scalars."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from utils.io import atomic_write_text


def save_args(args: argparse.Namespace, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(vars(args), indent=2, sort_keys=True, default=str) + "\n")


class RunRecorder:
    """Writes ``args.json``, appends ``epochs.jsonl`` and mirrors scalars to TensorBoard.

    ``enabled=False`` makes every method a no-op (non-zero ranks under torchrun).
    """

    def __init__(self, log_dir: str | os.PathLike, args: argparse.Namespace | None = None,
                 enabled: bool = True, tensorboard: bool = True):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if args is not None:
            save_args(args, self.log_dir / "args.json")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.log_dir))

    def log_epoch(self, epoch: int, scalars: dict) -> None:
        """Record one epoch. Lines for epochs ``>= epoch`` left by a killed run are dropped."""
        if not self.enabled:
            return
        path = self.log_dir / "epochs.jsonl"
        lines = []
        if path.exists():
            lines = [l for l in path.read_text().splitlines()
                     if l.strip() and json.loads(l).get("epoch", -1) < epoch]
        lines.append(json.dumps({"epoch": epoch, **scalars}, sort_keys=True))
        atomic_write_text(path, "\n".join(lines) + "\n")
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

    def add_figure(self, tag: str, figure, step: int = 0) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_figure(tag, figure, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
