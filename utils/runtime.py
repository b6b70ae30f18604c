"""Seeding and device choice. The device is chosen once, here, and passed around."""
from __future__ import annotations

import argparse
import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def device_error(device: str) -> str | None:
    """None when ``device`` is one of :data:`DEVICE_CHOICES`, else what it must be."""
    kind, sep, index = str(device).partition(":")
    if (kind in ("auto", "cpu", "cuda", "mps") and not sep) or (kind == "cuda" and index.isdigit()):
        return None
    return f"must be one of {DEVICE_CHOICES}"


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available, else CPU) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--device_index", default=None,
                        help="released flag: a CUDA index such as 0; overrides --device when "
                             "CUDA is available, else the CPU is used (default: unset)")


def get_device(device: str = "auto", device_index=None) -> torch.device:
    """Resolve ``--device``/``--device_index`` to one ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. The released ``--device_index N`` means
    ``cuda:N`` and falls back to the CPU (with a notice) when no GPU is present, so the
    released scripts run anywhere.
    """
    if device_index not in (None, "", "None"):
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(device_index)}")
        if device in ("auto", "cpu"):
            return torch.device("cpu")
    if device_error(device):
        raise ValueError(f"--device {device}: {device_error(device)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return dev
