"""Noisy-gradient channel statistics per class and layer (paper Eq. 3-4; README: Method).

For an image of class ``n`` and a hooked conv layer with output ``m`` (``[B, K, H, W]``)::

    a_{n,k} = (1/J) Σ_j Σ_hw c(∂y_n / ∂(m_k + σ_j)),   σ_j ~ U[-δ, δ],   c = |·| or relu

Per class, ``A_n = Σ_images a_n``; ``Â_n`` is ``A_n`` min-max normalised over channels and
``M[n, k] = Â[n, k] > θ`` marks the kernels class ``n`` relies on.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from core.gradients import layer_gradients
from models import load_modules
from utils.io import atomic_write

GRAD_MODES = ("abs", "relu")
NORM_EPS = 1e-5
STATS_FILE = "channel_stats.npz"     # what core/grad_calculate.py writes in --grad_path


def rectify(grads: torch.Tensor, grad_mode: str) -> torch.Tensor:
    """``|g|`` (paper) or ``relu(g)`` (released code)."""
    if grad_mode == "abs":
        return grads.abs()
    if grad_mode == "relu":
        return grads.clamp(min=0)
    raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")


MAX_COPIES = 512    # noisy copies per pass: bounds memory whatever J·B is


def channel_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      layers: Sequence[str], noise_draws: int = 1, noise_delta: float = 0.0,
                      grad_mode: str = "abs", max_copies: int = MAX_COPIES
                      ) -> dict[str, torch.Tensor]:
    """Per-sample ``a`` of every image for every layer: ``{name: [B, K]}``.

    The gradients come from :func:`core.gradients.layer_gradients` (the model must be in
    eval mode so samples do not interact). With ``δ = 0`` all draws are equal, so a single
    noiseless pass is taken. The J draws run in chunks of ``max(1, max_copies // B)``
    draws, so at most ``max(max_copies, B)`` noisy copies (and their gradients) are in
    memory at once; the noise is drawn in the same order as in one pass, so the result is
    the same. Peak RSS, two 3x3 convs (32, 64 channels) on 32 px images, B = 8, CPU:
    J = 10: 785 MiB; J = 1000: 1347 MiB (8706 MiB in one pass of all 8000 copies).
    """
    if noise_delta <= 0:
        grads = layer_gradients(model, images, labels, layers)
        return {name: rectify(g, grad_mode).sum(dim=(-2, -1))[0].detach()
                for name, g in grads.items()}
    per_chunk = max(1, max_copies // len(images))
    out = {}
    for name in layers:           # one layer's draws after another, as in a single pass
        total = 0
        for start in range(0, noise_draws, per_chunk):
            draws = min(per_chunk, noise_draws - start)
            (key, g), = layer_gradients(model, images, labels, [name], draws=draws,
                                        delta=noise_delta).items()
            total = total + rectify(g, grad_mode).sum(dim=(-2, -1)).sum(0).detach()
        out[key] = total / noise_draws
    return out


def _invalid_reason(error: Exception) -> str:
    """A short reason for an unreadable file, without the reader's advice to unpickle it."""
    if isinstance(error, KeyError):
        return f"array {error} missing"
    if isinstance(error, (zipfile.BadZipFile, EOFError)) or "pickle" in str(error):
        return "not an .npz archive, or a truncated one"
    return f"{type(error).__name__}: {error}"


class ChannelStatistics:
    """Running per-class sums ``A`` (``[C, K]`` per layer), their normalisation and masks.

    Only ``[C, K]`` sums and ``[C]`` counts are kept, never per-image feature-sized maps.
    """

    def __init__(self, layers: dict[str, int], num_classes: int, theta: float = 0.2,
                 settings: dict | None = None):
        self.layers = dict(layers)                      # name -> channels
        self.num_classes = num_classes
        self.theta = theta
        self.settings = dict(settings or {})
        self.sums = {n: torch.zeros(num_classes, k, dtype=torch.float64) for n, k in layers.items()}
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    @classmethod
    def for_model(cls, model: nn.Module, layers: Sequence[int | str], num_classes: int,
                  theta: float = 0.2, settings: dict | None = None) -> "ChannelStatistics":
        chosen = load_modules(model, list(layers))
        return cls({name: m.out_channels for name, m in chosen}, num_classes, theta, settings)

    def update(self, grads: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add per-sample ``a`` (``{name: [B, K]}``) to the sums of their classes."""
        labels = labels.detach().cpu()
        for name, a in grads.items():
            self.sums[name].index_add_(0, labels, a.detach().to("cpu", torch.float64))
        self.counts += torch.bincount(labels, minlength=self.num_classes)

    def normalized(self, name: str) -> torch.Tensor:
        """``Â = (A − min) / (max − min + 1e-5)`` per class row."""
        a = self.sums[name]
        lo = a.min(dim=1, keepdim=True).values
        hi = a.max(dim=1, keepdim=True).values
        return (a - lo) / (hi - lo + NORM_EPS)

    def mask(self, name: str) -> torch.Tensor:
        """``M[n, k] = Â[n, k] > θ``; a class without images keeps every channel (all ones)."""
        m = (self.normalized(name) > self.theta).to(torch.float32)
        m[self.counts == 0] = 1.0
        return m

    def empty_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if self.counts[c] == 0]

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """One self-describing ``.npz`` (loadable with ``allow_pickle=False``)."""
        arrays = {
            "layers": np.array(list(self.layers), dtype=str),
            "channels": np.array(list(self.layers.values()), dtype=np.int64),
            "num_classes": np.int64(self.num_classes), "theta": np.float64(self.theta),
            "counts": self.counts.numpy(),
        }
        for key, value in self.settings.items():
            arrays[f"setting/{key}"] = np.array(value if value is not None else "None")
        for i, name in enumerate(self.layers):
            arrays[f"layer{i}/sum"] = self.sums[name].numpy()
            arrays[f"layer{i}/normalized"] = self.normalized(name).numpy()
            arrays[f"layer{i}/mask"] = self.mask(name).numpy()
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChannelStatistics":
        """Read a file written by :meth:`save`, or the ``channel_stats.npz`` of a folder
        (``core/grad_calculate.py``'s ``--grad_path``).

        Raises FileNotFoundError, or a ValueError naming the file if it is not a valid
        statistics file (not an ``.npz``, truncated, missing or ill-shaped arrays). Arrays
        are never unpickled. The file read is kept in ``stats.path``.
        """
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"statistics file not found: {path}")
        try:
            stats = cls._read(path)
        except PermissionError:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError,
                zipfile.BadZipFile, RuntimeError) as e:
            # numpy's own message may advise loading with pickles enabled: give ours instead
            reason = _invalid_reason(e)
            raise ValueError(f"{path} is not a valid channel statistics file (the .npz that "
                             f"core/grad_calculate.py writes): {reason}") from None
        stats.path = path
        return stats

    @classmethod
    def _read(cls, path: Path) -> "ChannelStatistics":
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive of arrays")
            names = [str(n) for n in z["layers"]]
            channels = [int(c) for c in z["channels"]]
            if len(channels) != len(names):
                raise ValueError(f"{len(names)} layers but {len(channels)} channel counts")
            settings = {k.split("/", 1)[1]: z[k].item() for k in z.files if k.startswith("setting/")}
            stats = cls(dict(zip(names, channels)), int(z["num_classes"]), float(z["theta"]),
                        settings)
            counts = z["counts"]
            if counts.shape != (stats.num_classes,):
                raise ValueError(f"'counts' has shape {counts.shape}, expected "
                                 f"({stats.num_classes},)")
            stats.counts = torch.from_numpy(counts.astype(np.int64))
            for i, name in enumerate(names):
                sums = z[f"layer{i}/sum"]
                if sums.shape != (stats.num_classes, channels[i]):
                    raise ValueError(f"'layer{i}/sum' has shape {sums.shape}, expected "
                                     f"({stats.num_classes}, {channels[i]})")
                stats.sums[name] = torch.from_numpy(sums.astype(np.float64))
        return stats

    def check_settings(self, run: dict, fingerprint: str | None = None,
                       escape: str | None = None) -> None:
        """Refuse statistics computed for another model, data set or run.

        Args:
            run: this run's settings (``model_name``, ``data_name``, ``grad_mode``, ...);
                each one the file also stores must be equal (``None`` values are skipped).
            fingerprint: :func:`utils.weights_fingerprint` of the model about to use the
                statistics; it must equal the ``model_fingerprint`` of the weights they were
                computed on (a file without one only warns: it cannot be verified).
            escape: the flag that skips this check, named in the error.
        Raises:
            ValueError naming the file and the first mismatching setting.
        """
        where = getattr(self, "path", "statistics")
        hint = f", or pass {escape} to use them anyway" if escape else ""
        for key, value in run.items():
            if value is None or key not in self.settings:
                continue
            if str(self.settings[key]) != str(value):
                raise ValueError(f"{where} was computed with {key}={self.settings[key]!r}, this "
                                 f"run has {key}={value!r}: recompute the statistics "
                                 f"(core/grad_calculate.py) for this run{hint}")
        if fingerprint is None:
            return
        stored = self.settings.get("model_fingerprint")
        if stored is None:
            warnings.warn(f"{where} stores no weights fingerprint: cannot check that it was "
                          f"computed on this model's weights", stacklevel=2)
        elif str(stored) != fingerprint:
            source = self.settings.get("model_path", "?")
            raise ValueError(f"{where} was computed on other weights ({source}, fingerprint "
                             f"{str(stored)[:12]}) than this model's (fingerprint "
                             f"{fingerprint[:12]}): another run or epoch of "
                             f"{self.settings.get('model_name', 'the model')}; recompute the "
                             f"statistics (core/grad_calculate.py) for these weights{hint}")

    def check_model(self, model: nn.Module, layers: Sequence[str], num_classes: int,
                    source: str = "statistics") -> None:
        """Raise a ValueError naming the layer and counts if these statistics do not fit."""
        where = getattr(self, "path", source)
        if num_classes != self.num_classes:
            raise ValueError(f"{where} has {self.num_classes} classes, the model has {num_classes}")
        convs = dict(load_modules(model))
        for name in layers:
            if name not in self.layers:
                raise ValueError(f"{where} has no statistics for layer {name!r} "
                                 f"(it holds: {', '.join(self.layers)})")
            if name not in convs:
                raise ValueError(f"{where} names layer {name!r}, which the model does not have")
            if convs[name].out_channels != self.layers[name]:
                raise ValueError(f"layer {name!r}: {where} has {self.layers[name]} channels, "
                                 f"the model has {convs[name].out_channels}")
