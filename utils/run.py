"""Run records: resolved arguments, one JSON line per epoch, TensorBoard scalars; the lock
that keeps a second run out of a folder, and the clean-up of a killed run's temporary files."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from utils.io import atomic_write_text


def save_args(args: argparse.Namespace, path: str | os.PathLike, record: dict | None = None) -> None:
    """``args`` as JSON, plus ``record`` (e.g. the run's key)."""
    atomic_write_text(path, json.dumps({**vars(args), **(record or {})}, indent=2, sort_keys=True,
                                       default=str) + "\n")


class RunRecorder:
    """Writes ``args.json``, appends ``epochs.jsonl`` and mirrors scalars to TensorBoard.

    ``enabled=False`` makes every method a no-op (non-zero ranks under torchrun).
    ``purge_step``: TensorBoard drops the steps from this one on that earlier writers left in
    ``log_dir`` (a resumed run: the epoch after its checkpoint), so no curve is drawn twice.
    ``record``: extra entries of ``args.json``.
    """

    def __init__(self, log_dir: str | os.PathLike, args: argparse.Namespace | None = None,
                 enabled: bool = True, tensorboard: bool = True, purge_step: int | None = None,
                 record: dict | None = None):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if args is not None:
            save_args(args, self.log_dir / "args.json", record)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

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


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that an atomic write killed midway left in
    ``folder``; return them. Only for a folder whose lock the caller holds."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(".*.tmp") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM     # exists, owned by another user
    return True


LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, enabled: bool = True) -> Iterator[Path | None]:
    """Hold ``folder/.run.lock`` (the holder's pid and host) while a run writes ``folder``.

    A lock held by a live process (or one on another host) refuses this run with a
    ValueError of one line; a lock whose process is dead on this host is taken over, with a
    note. ``enabled=False`` (non-zero ranks) does nothing.
    """
    if not enabled:
        yield None
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, host = None, None, me["host"]   # unreadable: a killed writer
            if pid is not None and (host != me["host"] or _alive(pid)):
                raise ValueError(f"{folder} is in use by another run (pid {pid} on {host}, "
                                 f"lock {path}); wait for it or choose another folder") from None
            print(f"note: taking over the stale lock {path} "
                  f"({'of dead pid ' + str(pid) if pid is not None else 'unreadable'})")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise ValueError(f"{folder}: could not take the lock {path}; another run is starting")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
