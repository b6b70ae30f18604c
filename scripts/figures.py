"""Paper figures 4 and 5 from trained models.

    # Fig. 4: per-class accuracy of the original and treated models, and the per-class gain
    python -m scripts.figures per_class --original_json ori/test_test.json \
        --treated_json channel/test_test.json space/test_test.json \
        --treated_labels +Channel +Space --out results/fig4_per_class.png

    # Fig. 5: image | gradient map of original, +Space, +Channel | Grad-CAM of the original
    python -m scripts.figures visual --model_name resnet34 --data_name decoy_digits \
        --data_dir data/decoy_digits --original_model_path .../models/model_ori.pth \
        --space_model_path .../space/models/model_doctor.pth \
        --channel_model_path .../channel/models/model_doctor.pth --out results/fig5_visual.png

The gradient maps are ``Σ_k |∂y_n/∂m_k|`` at one conv layer
(:func:`core.visualize.gradient_map`); Grad-CAM (Selvaraju et al. 2017) is computed here at the
same layer: ``w_k = mean_hw ∂y_n/∂A_k``, ``cam = relu(Σ_k w_k A_k)``, upsampled to the image
and scaled to [0, 1]. ``n`` is the true class (or, for a folder of unlabelled images, the
original model's prediction).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import matplotlib  # noqa: E402

matplotlib.use("Agg")   # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import loaders  # noqa: E402
from core.gradients import eval_mode, layer_gradients  # noqa: E402
from core.visualize import (display_images, gradient_map, save_figure,  # noqa: E402
                            spread_over_classes, upsample_normalise)
from loaders.folder import IMAGE_EXTENSIONS, open_image  # noqa: E402
from core.entry import add_model_data_args, input_channels, load_trained_model  # noqa: E402
from utils import add_device_args, get_device, load_checkpoint  # noqa: E402
from utils import validate  # noqa: E402


# -- Grad-CAM --------------------------------------------------------------------------------
def grad_cam_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  layer_name: int | str) -> torch.Tensor:
    """Raw Grad-CAM at the layer's resolution, ``[B, h, w]``: ``relu(Σ_k w_k A_k)`` with
    ``A`` (``[B, K, h, w]``) the conv output and ``w_k = mean_hw ∂y_n/∂A_k`` (``n = labels``).
    One backward pass for the batch; the model is evaluated in eval mode (mode restored)."""
    with eval_mode(model):
        grads, _, acts = layer_gradients(model, images, labels, [layer_name],
                                         with_outputs=True)
    (grad,), (act,) = grads.values(), acts.values()
    weights = grad[0].mean(dim=(2, 3), keepdim=True)
    return (weights * act).sum(dim=1).clamp(min=0)


def grad_cam(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             layer_name: int | str) -> torch.Tensor:
    """Grad-CAM upsampled (bilinear) to the input size and min-max scaled to [0, 1] per
    image, ``[B, H_in, W_in]`` (an all-zero cam stays 0)."""
    return upsample_normalise(grad_cam_maps(model, images, labels, layer_name),
                              images.shape[-2:])


# -- Fig. 4 ----------------------------------------------------------------------------------
def _per_class(result: dict) -> np.ndarray:
    return np.array([np.nan if a is None else a for a in result["per_class"]], dtype=float)


def plot_per_class(original: dict, treated: Sequence[dict], treated_labels: Sequence[str],
                   path: str | Path, sort: bool = False, title: str = "") -> plt.Figure:
    """Fig. 4: per-class accuracy bars (original + each treated model) above the per-class
    gain of each treated model, from ``test.py`` result dicts (``per_class``, ``classes``,
    ``top1``). ``sort`` orders classes by the original accuracy, lowest first."""
    classes = list(original["classes"])
    base = _per_class(original)
    accs = [_per_class(r) for r in treated]
    for label, r, acc in zip(treated_labels, treated, accs):
        if list(r["classes"]) != classes or len(acc) != len(base):
            raise ValueError(f"{label}: classes differ from the original model's "
                             f"({r['classes'][:5]}… vs {classes[:5]}…)")
    order = np.argsort(np.nan_to_num(base, nan=-1.0), kind="stable") if sort else \
        np.arange(len(classes))
    x = np.arange(len(classes))
    width = 0.8 / (1 + len(treated))
    figsize = (min(30.0, max(6.0, 0.3 * len(classes) * (1 + len(treated)) + 2)), 6.5)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=figsize, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    series = [("Original", base, original["top1"])] + [
        (label, acc, r["top1"]) for label, acc, r in zip(treated_labels, accs, treated)]
    for i, (label, acc, top1) in enumerate(series):
        top.bar(x + (i - len(treated) / 2) * width, 100 * acc[order], width,
                label=f"{label} ({100 * top1:.1f}%)")
    top.set_ylabel("accuracy (%)")
    top.set_ylim(max(0.0, np.nanmin([100 * np.nanmin(a) for _, a, _ in series]) - 10), 101)
    top.legend(fontsize=8, loc="lower right")
    top.grid(axis="y", alpha=0.3)
    for i, (label, acc) in enumerate(zip(treated_labels, accs), start=1):
        bottom.bar(x + (i - 1 - (len(treated) - 1) / 2) * width, 100 * (acc - base)[order], width,
                   label=label, color=f"C{i}")
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_ylabel("gain (points)")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(x)
    bottom.set_xticklabels([classes[i] for i in order], rotation=45 if len(classes) > 10 else 0,
                           ha="right" if len(classes) > 10 else "center", fontsize=8)
    if title:
        top.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def format_per_class(original: dict, treated: Sequence[dict], labels: Sequence[str]) -> str:
    head = f"{'class':>16s}  {'Original':>8s}" + "".join(f"  {l:>16s}" for l in labels)
    lines = [head]
    base = _per_class(original)
    accs = [_per_class(r) for r in treated]
    for c, name in enumerate(original["classes"]):
        cells = "".join(f"  {f'{100 * a[c]:.1f} ({100 * (a[c] - base[c]):+.1f})':>16s}"
                        for a in accs)
        lines.append(f"{str(name):>16s}  {100 * base[c]:>8.1f}{cells}")
    return "\n".join(lines)


# -- Fig. 5 ----------------------------------------------------------------------------------
def visual_grid(images_display: np.ndarray, columns: Sequence[tuple[str, np.ndarray]],
                path: str | Path, cell_titles: Sequence[Sequence[str]] | None = None,
                row_titles: Sequence[str] | None = None, alpha: float = 0.5,
                suptitle: str = "") -> plt.Figure:
    """Fig. 5: one row per image — the image, then each ``(title, maps [B, H, W] in [0, 1])``
    column drawn over it (jet at ``alpha``). ``cell_titles[j][b]`` labels map column ``j``."""
    count, ncols = len(images_display), 1 + len(columns)
    if count == 0:
        raise ValueError("visual_grid: no images to draw")
    fig, axes = plt.subplots(count, ncols, figsize=(1.9 * ncols, 2.0 * count), squeeze=False)
    gray = images_display.shape[-1] == 1
    for b in range(count):
        image = images_display[b, ..., 0] if gray else images_display[b]
        for j in range(ncols):
            ax = axes[b, j]
            ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1)
            if j > 0:
                ax.imshow(np.asarray(columns[j - 1][1][b]), cmap="jet", alpha=alpha,
                          vmin=0, vmax=1)
                if cell_titles is not None:
                    ax.set_xlabel(cell_titles[j - 1][b], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_title("image" if j == 0 else columns[j - 1][0], fontsize=9)
        if row_titles is not None:
            axes[b, 0].set_ylabel(row_titles[b], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def load_images(args: argparse.Namespace, spec, in_channels: int
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[str], list[str]]:
    """``(images [N, C, H, W] normalised, labels [N] or None, names, classes)`` from a flat
    ``--image_dir`` (labels unknown) or a dataset split (``--num_images`` spread over classes)."""
    if args.image_dir:
        files = sorted(p for p in Path(args.image_dir).iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS)[:args.num_images]
        if not files and any(p.is_dir() for p in Path(args.image_dir).iterdir()):
            args.data_dir, args.image_dir = args.image_dir, None   # class folders after all
            return load_images(args, spec, in_channels)
        if not files:
            raise FileNotFoundError(f"no images in {args.image_dir}")
        transform = loaders.build_transform(spec, False, in_channels)
        images = torch.stack([transform(open_image(f, in_channels)) for f in files])
        return images, None, [f.name for f in files], []
    dataset = loaders.build_dataset(args.data_name, args.data_dir, args.data_type,
                                    in_channels, train_transform=False)
    indices = spread_over_classes([label for _, label in dataset.samples], args.num_images)
    items = [dataset[i] for i in indices]
    return (torch.stack([it.image for it in items]), torch.tensor([int(it.label) for it in items]),
            [str(it.path) for it in items], list(dataset.classes))


def main_visual(args: argparse.Namespace) -> plt.Figure:
    device = get_device(args.device, args.device_index)
    spec = loaders.get_spec(args.data_name)
    in_channels = input_channels(args)
    images, labels, names, classes = load_images(args, spec, in_channels)
    recorded = None    # flat --image_dir: the class count the checkpoint records
    if args.num_classes is None and not classes:
        recorded = int(load_checkpoint(args.original_model_path).get("num_classes", 0)) or None

    def load_classifier(path: str) -> nn.Module:
        return load_trained_model(args, classes, device, path, recorded).model.eval()
    images = images.to(device)
    original = load_classifier(args.original_model_path)
    with torch.no_grad():
        probs = original(images).softmax(dim=1)
    if labels is None:   # unlabelled images: explain the original model's prediction
        labels = probs.argmax(dim=1)
    labels = labels.to(device)

    def name(c: int) -> str:
        return classes[c] if c < len(classes) else str(c)

    def predictions(p: torch.Tensor) -> list[str]:
        conf, pred = p.max(dim=1)
        return [f"→ {name(int(k))} ({float(v):.2f})" for k, v in zip(pred, conf)]

    columns, cells = [], []
    for title, path in (("Original", args.original_model_path),
                        ("+Space", args.space_model_path),
                        ("+Channel", args.channel_model_path),
                        ("+All", args.all_model_path)):
        if not path:
            continue
        model = original if path == args.original_model_path else \
            load_classifier(path)
        with torch.no_grad():
            cells.append(predictions(model(images).softmax(dim=1)))
        maps = gradient_map(model, images, labels, args.layer, args.grad_mode)
        columns.append((title, maps.cpu().numpy()))
    cam_layer = args.cam_layer if args.cam_layer is not None else args.layer
    columns.append(("Grad-CAM (original)",
                    grad_cam(original, images, labels, cam_layer).cpu().numpy()))
    cells.append(cells[0])
    mean, std = loaders.normalization_stats(spec, in_channels)
    rows = [f"{name(int(l))}\n{Path(n).name}" for l, n in zip(labels, names)]
    fig = visual_grid(display_images(images, mean, std), columns, args.out, cells, rows,
                      suptitle=f"{args.model_name}: Σ_k |∂y_n/∂m_k| at layer {args.layer}, "
                               f"Grad-CAM at {cam_layer}")
    print(f"wrote {args.out} ({len(images)} images × {len(columns) + 1} columns)")
    return fig


def main_per_class(args: argparse.Namespace) -> plt.Figure:
    original = json.loads(Path(args.original_json).read_text())
    treated = [json.loads(Path(p).read_text()) for p in args.treated_json]
    labels = list(args.treated_labels or [])
    labels += [Path(p).parent.parent.name or Path(p).stem
               for p in args.treated_json[len(labels):]]
    fig = plot_per_class(original, treated, labels, args.out, args.sort, args.title)
    print(format_per_class(original, treated, labels))
    print(f"wrote {args.out}")
    return fig


def get_args_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="figure", required=True)

    f4 = sub.add_parser("per_class", formatter_class=fmt,
                        help="Fig. 4: per-class accuracy and gain from test.py JSON files")
    f4.add_argument("--original_json", required=True, help="test.py output of the original model")
    f4.add_argument("--treated_json", required=True, nargs="+",
                    help="test.py outputs of treated models")
    f4.add_argument("--treated_labels", nargs="+", default=None,
                    help="legend names (default: the variant folder names)")
    f4.add_argument("--sort", action="store_true",
                    help="order classes by the original accuracy, lowest first")
    f4.add_argument("--title", default="")
    f4.add_argument("--out", default="results/fig4_per_class.png")
    f4.set_defaults(func=main_per_class)

    f5 = sub.add_parser("visual", formatter_class=fmt,
                        help="Fig. 5: gradient maps of original/+Space/+Channel and Grad-CAM")
    add_model_data_args(f5)      # --num_classes: without classes, the checkpoint's
    f5.add_argument("--original_model_path", required=True)
    f5.add_argument("--space_model_path", default=None)
    f5.add_argument("--channel_model_path", default=None)
    f5.add_argument("--all_model_path", default=None, help="optional fourth model column")
    f5.add_argument("--data_dir", default="data/decoy_digits",
                    help="dataset root (with split folders) or a class-folder root")
    f5.add_argument("--data_type", default="test")
    f5.add_argument("--image_dir", default=None,
                    help="a flat folder of unlabelled images instead of --data_dir "
                         "(maps explain the original model's prediction); a folder of class "
                         "folders (e.g. sift/low) is read as a labelled dataset")
    f5.add_argument("--num_images", type=int, default=6)
    f5.add_argument("--layer", default="0", help="conv layer of the gradient maps (0 = last)")
    f5.add_argument("--cam_layer", default=None, help="Grad-CAM layer (default: --layer)")
    f5.add_argument("--grad_mode", default="abs", choices=("abs", "relu"))
    f5.add_argument("--out", default="results/fig5_visual.png")
    add_device_args(f5)
    f5.set_defaults(func=main_visual)
    return p


if __name__ == "__main__":
    args = validate.parse_args(get_args_parser())
    args.func(args)
