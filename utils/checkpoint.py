"""Model weight files: metadata travels with the weights, mismatches are explained."""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn as nn

from utils.io import atomic_save, load_checkpoint


def save_weights(model: nn.Module, path: str | os.PathLike, **meta) -> None:
    """Write ``{"model": state_dict, **meta}`` atomically (``meta``: model_name, num_classes…)."""
    atomic_save({"model": unwrap(model).state_dict(), **meta}, path)


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's state dict: every tensor's name, dtype, shape and bytes.

    Equal for the same weights on any device; different for any other run or epoch.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(unwrap(model).state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(model, "module", model)


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str = "model") -> dict:
    """Load weights from ``path`` into ``model``; return the file's metadata.

    Accepts this project's files (``{"model": state_dict, ...}``), ``last.pth`` training
    states and the released plain state dicts. A file that does not fit raises a ValueError
    naming the file, the model and the first differing tensors (e.g. a wrong num_classes).
    """
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a valid checkpoint: it holds a "
                         f"{type(ckpt).__name__}, not a state dict")
    state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    meta = {k: v for k, v in ckpt.items() if k != "model"} if state is not ckpt else {}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a valid checkpoint: no state dict of tensors in it")
    target = unwrap(model)
    own = target.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    problems = []
    if meta.get("model_name") not in (None, model_name):
        problems.append(f"it was saved from {meta['model_name']!r}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:3]))
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if problems:
        expect = ", ".join(f"{k}={meta[k]}" for k in ("model_name", "num_classes", "in_channels")
                           if k in meta)
        raise ValueError(f"checkpoint {path} does not fit {model_name}"
                         f"{' (file: ' + expect + ')' if expect else ''}: " + "; ".join(problems))
    target.load_state_dict(state)
    return meta
