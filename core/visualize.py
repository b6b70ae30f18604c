"""Figures of the diagnosis (paper Fig. 2): class × kernel heat maps and gradient overlays.

* :func:`plot_channel_heatmap` — Fig. 2(a), the normalised statistics ``Â`` of one layer.
* :func:`gradient_map` — the summed derivative map ``Σ_k |∂y_n/∂m_k|`` of one layer,
  upsampled to the input and scaled to [0, 1] per image.
* :func:`overlay_figure`, :func:`plot_high_low_overlays` — Fig. 2(b), images covered with
  those maps; :func:`diagnosis_figures` builds the high- vs low-confidence figure from two
  sifted image folders.

Every figure is written as a PNG atomically and also returned, for TensorBoard.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")   # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from core.channel_stats import rectify  # noqa: E402
from core.gradients import eval_mode, layer_gradients  # noqa: E402
from utils.io import atomic_write  # noqa: E402

MAX_CLASS_TICKS = 30
MAP_LABEL = {"abs": "|∂y_n/∂m_k|", "relu": "relu(∂y_n/∂m_k)"}


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG atomically (rendered in memory, then renamed into place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    return Path(path)


# -- Fig. 2(a) ------------------------------------------------------------------------------
def plot_channel_heatmap(normalized: np.ndarray, class_names: Sequence[str], title: str = "",
                         path: str | os.PathLike | None = None) -> plt.Figure:
    """Class × kernel heat map of ``Â`` (``[C, K]``, values in [0, 1]); PNG at ``path``."""
    normalized = np.asarray(normalized, dtype=np.float64)
    num_classes, channels = normalized.shape
    fig, ax = plt.subplots(figsize=(min(4 + channels / 40, 16), min(2 + num_classes / 3, 12)))
    im = ax.imshow(normalized, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                   interpolation="nearest")
    ax.set_xlabel("kernel")
    ax.set_ylabel("class")
    if num_classes <= MAX_CLASS_TICKS:
        ax.set_yticks(range(num_classes))
        ax.set_yticklabels([str(c) for c in class_names][:num_classes])
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="normalised correlation Â")
    if path is not None:
        save_figure(fig, path)
    return fig


# -- summed derivative maps ------------------------------------------------------------------
def score_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    layer_name: int | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂y_n/∂m, logits)``: gradient of each image's class score ``y[b, n_b]`` w.r.t. the
    output ``m`` (``[B, K, H, W]``) of one conv layer (:func:`core.gradients.layer_gradients`).

    The model should be in eval mode (batch norm statistics frozen), so samples are independent.
    """
    grads, logits, _ = layer_gradients(model, images, labels, [layer_name], with_outputs=True)
    (grad,) = grads.values()
    return grad[0], logits


def upsample_normalise(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[B, h, w]`` maps → bilinear to ``size`` → min-max to [0, 1] per image (flat → 0)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear",
                       align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(up))


def gradient_map(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 layer_name: int | str, grad_mode: str = "abs") -> torch.Tensor:
    """Summed derivative map ``Σ_k c(∂y_n/∂m_k)`` (``c = |·|`` by default), ``[B, H_in, W_in]``.

    Computed at the layer's resolution, upsampled bilinearly to the input size and
    min-max normalised to [0, 1] per image. The model is evaluated in eval mode (its mode
    is restored afterwards).
    """
    with eval_mode(model):
        grad, _ = score_gradients(model, images, labels, layer_name)
    return upsample_normalise(rectify(grad, grad_mode).sum(dim=1), images.shape[-2:])


# -- overlays -----------------------------------------------------------------------------
def display_images(images: torch.Tensor, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> np.ndarray:
    """Normalised ``[B, C, H, W]`` tensors → ``[B, H, W, C]`` array in [0, 1] for plotting."""
    x = images.detach().cpu().float()
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _draw_overlay(ax, image: np.ndarray, heat: np.ndarray, title: str, alpha: float) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_figure(images_display: np.ndarray, maps, titles: Sequence[str] | None = None,
                   path: str | os.PathLike | None = None, ncols: int = 4,
                   alpha: float = 0.5, suptitle: str = "") -> plt.Figure:
    """A grid of images (``[B, H, W, C]`` in [0, 1]) covered with ``maps`` (``[B, H, W]``,
    [0, 1], jet colour map at ``alpha``); PNG at ``path``."""
    maps = np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps)
    count = len(images_display)
    if count == 0:
        raise ValueError("overlay_figure: no images to draw")
    titles = list(titles) if titles is not None else [""] * count
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < count:
            _draw_overlay(ax, images_display[i], maps[i], titles[i], alpha)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_high_low_overlays(high_images: np.ndarray | None, high_maps,
                           low_images: np.ndarray | None, low_maps=None,
                           high_titles: Sequence[str] | None = None,
                           low_titles: Sequence[str] | None = None,
                           path: str | os.PathLike | None = None, alpha: float = 0.5,
                           suptitle: str = "") -> plt.Figure:
    """Fig. 2(b): a row of high-confidence and a row of low-confidence images (``[B, H, W, C]``
    in [0, 1]) covered with their summed derivative maps (``[B, H, W]``). Either row may be
    None or empty; the other is drawn alone."""
    rows = [(label, images, maps, titles) for label, images, maps, titles in (
        ("high confidence", high_images, high_maps, high_titles),
        ("low confidence", low_images, low_maps, low_titles)) if images is not None and len(images)]
    if not rows:
        raise ValueError("plot_high_low_overlays: no images to draw")
    ncols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.6 * len(rows)),
                             squeeze=False)
    for r, (label, images, maps, titles) in enumerate(rows):
        maps = np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps)
        titles = list(titles) if titles is not None else [""] * len(images)
        for c, ax in enumerate(axes[r]):
            if c < len(images):
                _draw_overlay(ax, images[c], maps[c], titles[c], alpha)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# -- from image folders -------------------------------------------------------------------
def dataset_normalisation(dataset) -> tuple[list[float] | None, list[float] | None]:
    """Mean/std of the ``v2.Normalize`` step in ``dataset.transform`` (None if there is none)."""
    steps = getattr(getattr(dataset, "transform", None), "transforms", [])
    for step in steps:
        if isinstance(step, v2.Normalize):
            return list(step.mean), list(step.std)
    return None, None


def spread_over_classes(labels: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` indices taken round-robin over classes (first image of each class,
    then the second, ...), so a figure shows as many classes as it can."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][:count - len(chosen)]
        depth += 1
    return chosen


def overlay_panel(model: nn.Module, dataset, indices: Sequence[int], layer_name: int | str,
                  device: torch.device | str = "cpu", grad_mode: str = "abs",
                  extra_titles: Sequence[str] | None = None
                  ) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    """Images ``indices`` of ``dataset`` (items ``(image, label, ...)``) → display images,
    their summed derivative maps (true class) and titles ``"class → prediction (conf)"``."""
    items = [dataset[i] for i in indices]
    images = torch.stack([it.image for it in items]).to(device)
    labels = torch.tensor([int(it.label) for it in items], device=device)
    with eval_mode(model):
        grad, logits = score_gradients(model, images, labels, layer_name)
    maps = upsample_normalise(rectify(grad, grad_mode).sum(dim=1), images.shape[-2:]).cpu()
    conf, pred = logits.softmax(dim=1).max(dim=1)
    classes = list(getattr(dataset, "classes", []))

    def name(c: int) -> str:
        return classes[c] if c < len(classes) else str(c)
    titles = [f"{name(int(l))} → {name(int(p))} ({float(c):.2f})"
              for l, p, c in zip(labels, pred, conf)]
    if extra_titles is not None:
        titles = [f"{t}\n{e}" for t, e in zip(titles, extra_titles)]
    mean, std = dataset_normalisation(dataset)
    return display_images(images, mean, std), maps, titles


def diagnosis_figures(model: nn.Module, high_dataset, low_dataset, layer_name: int | str,
                      out_dir: str | os.PathLike, num_images: int = 8,
                      device: torch.device | str = "cpu", grad_mode: str = "abs",
                      filename: str = "overlays_high_low.png") -> plt.Figure:
    """Fig. 2(b) from sifted folders: ``num_images`` high-confidence images (spread over
    classes) above as many low-confidence ones (``low_dataset`` may be None), each covered
    with its summed derivative map at ``layer_name``. Written to ``out_dir/filename``."""
    panels = []
    for dataset in (high_dataset, low_dataset):
        if dataset is None or len(dataset) == 0:
            panels.append((None, None, None))
            continue
        indices = spread_over_classes([label for _, label in dataset.samples], num_images)
        panels.append(overlay_panel(model, dataset, indices, layer_name, device, grad_mode))
    (hi_img, hi_map, hi_t), (lo_img, lo_map, lo_t) = panels
    return plot_high_low_overlays(hi_img, hi_map, lo_img, lo_map, hi_t, lo_t,
                                  Path(out_dir) / filename,
                                  suptitle=f"Σ_k {MAP_LABEL[grad_mode]} at {layer_name}")
