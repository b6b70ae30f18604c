"""Per-sample diagnosis: which images lean on channels (or pixels) their class does not use.

    python core/diagnose.py --model_name resnet34 --data_name decoy_digits \
        --model_path output/resnet34_decoy_digits/models/model_ori.pth \
        --grad_path output/resnet34_decoy_digits/grads --data_path data/decoy_digits \
        --data_type test --mask_dir data/decoy_digits/masks \
        --out_dir output/resnet34_decoy_digits/diagnosis

The paper computes the class-channel statistics on confident images and says they "can be
used to diagnose" failures; this tool does so per image. For an image of class ``n`` and the
hooked layer's output ``m`` (``[K, H, W]``), with ``c = |·|`` (or relu) and ``M`` the class
masks of ``channel_stats.npz`` (README: Method)::

    off_mask_share    = Σ_k (1 − M[n, k]) Σ_hw c(∂y_n/∂m_k)  /  Σ_k Σ_hw c(∂y_n/∂m_k)
    background_share  = Σ_hw Bg ⊙ Σ_k c(∂y_n/∂m_k)  /  Σ_hw Σ_k c(∂y_n/∂m_k)

(``Bg`` = the mask's background pixels, ignored ones excluded, area-resized to ``H × W``;
only for images with a mask). Images are
ranked by ``off_mask_share``, most strayed first. Writes ``out_dir/diagnosis.csv``,
``summary.json``, overlay figures of the most strayed and the most typical images (and, with
``--high_path``, the Fig. 2(b) high/low-confidence figure) and TensorBoard figures in
``out_dir/runs``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import warnings
from pathlib import Path

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import loaders  # noqa: E402
from core.entry import add_model_data_args, load_trained_model, resolved_args  # noqa: E402
from utils.cli import HelpFormatter, run_main  # noqa: E402
from utils.io import refuse_overlap  # noqa: E402
import models  # noqa: E402
from core.channel_stats import GRAD_MODES, ChannelStatistics, rectify  # noqa: E402
from core.grad_constraint import background_weights  # noqa: E402
from core.visualize import (diagnosis_figures, overlay_figure, overlay_panel,  # noqa: E402
                            score_gradients)
from utils import (RunRecorder, add_device_args, atomic_write_text, get_device,  # noqa: E402
                   weights_fingerprint)

CSV_COLUMNS = ("rank", "file", "label", "class_name", "prediction", "confidence",
               "off_mask_share", "background_share")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--grad_path", default="output/grads",
                   help="folder holding channel_stats.npz (core/grad_calculate.py), or the file")
    p.add_argument("--data_path", default="data/decoy_digits",
                   help="dataset root holding the split, or a <class>/<file> folder")
    p.add_argument("--data_type", default="test", help="split to diagnose")
    p.add_argument("--mask_dir", default=None,
                   help="object masks <class>/<stem>.png (or a root holding <data_type>/); "
                        "enables background_share (default: none)")
    p.add_argument("--layer", default="0",
                   help="conv layer: index from the last conv or module name")
    p.add_argument("--grad_mode", default=None, choices=GRAD_MODES,
                   help="gradient rectifier (default: the one the statistics were computed with)")
    p.add_argument("--allow_foreign_stats", action="store_true",
                   help="use statistics computed for another model name, data set or other "
                        "weights than --model_path")
    p.add_argument("--out_dir", default="output/diagnosis",
                   help="output folder: diagnosis.csv, summary.json, overlay figures")
    p.add_argument("--num_overlays", type=int, default=8,
                   help="images in each overlay figure")
    p.add_argument("--high_path", default=None,
                   help="sifted high-confidence images: also draw the high/low figure "
                        "(default: none)")
    p.add_argument("--low_path", default=None,
                   help="sifted low-confidence images, the figure's second row (default: none)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per batch (default: 128 at 28/32 px, 32 at 96/224 px)")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bar")
    add_device_args(p)
    return p


# -- measures (pure) --------------------------------------------------------------------------
def off_mask_share(channel_mass: torch.Tensor, mask: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """Share of each sample's gradient mass on channels outside its class's mask.

    Args:
        channel_mass: ``[B, K]``, ``Σ_hw c(∂y_n/∂m_k)`` per sample and channel (≥ 0).
        mask: ``[C, K]`` class-channel mask ``M`` (1 = the class uses the channel).
        labels: ``[B]`` class ``n`` of each sample.
    Returns:
        ``[B]`` in [0, 1]; NaN where a sample has no gradient mass at all.
    """
    channel_mass = torch.as_tensor(channel_mass, dtype=torch.float64)
    mask = torch.as_tensor(mask, dtype=torch.float64, device=channel_mass.device)
    labels = torch.as_tensor(labels, device=channel_mass.device).long()
    off = (channel_mass * (1.0 - mask[labels])).sum(dim=1)
    return off / channel_mass.sum(dim=1)


def image_background_share(grad_map: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Share of each sample's gradient mass on background pixels.

    Args:
        grad_map: ``[B, H, W]``, ``Σ_k c(∂y_n/∂m_k)`` at the layer's resolution.
        background: ``[B, 1, H0, W0]``, 1 = background, at the input resolution; resized to
            ``H × W`` by area averaging (a layer cell counts by its background fraction).
    Returns:
        ``[B]`` in [0, 1]; NaN where a sample has no gradient mass at all.
    """
    grad_map = torch.as_tensor(grad_map, dtype=torch.float64)
    background = torch.as_tensor(background, dtype=torch.float64, device=grad_map.device)
    bg = F.interpolate(background, size=tuple(grad_map.shape[-2:]), mode="area")[:, 0]
    return (grad_map * bg).sum(dim=(1, 2)) / grad_map.sum(dim=(1, 2))


# -- pass over the data -----------------------------------------------------------------------
def diagnose(model: torch.nn.Module, loader, layer_name: str, mask: torch.Tensor,
             device: torch.device, grad_mode: str = "abs", progress: bool = True,
             known_classes: torch.Tensor | None = None) -> dict:
    """One pass: per image label, prediction, confidence, off_mask_share and (for items
    ``(image, label, rel, mask, annotated)``) background_share (NaN if not annotated).
    ``known_classes`` (``[C]`` bool): classes the statistics saw images of; the others have
    no mask to stray from, so their off_mask_share is NaN.
    Returns a dict of ``[N]`` arrays plus ``files``, in loader order."""
    model.eval()
    mask = mask.to(device)
    if known_classes is not None:
        known_classes = known_classes.to(device)
    out: dict[str, list] = {k: [] for k in ("labels", "preds", "confidence", "off", "bg", "files")}
    for batch in tqdm(loader, desc="diagnose", leave=False, disable=not progress):
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        grad, logits = score_gradients(model, images, labels, layer_name)
        g = rectify(grad, grad_mode)                                     # [B, K, H, W]
        off = off_mask_share(g.sum(dim=(2, 3)), mask, labels)
        if known_classes is not None:
            off = torch.where(known_classes[labels], off, torch.full_like(off, float("nan")))
        bg = torch.full_like(off, float("nan"))
        if isinstance(batch, loaders.Batch):
            masks, annotated = loaders.batch_masks(batch, device, "background_share")
            if annotated.any():
                background = (masks.round() == loaders.MASK_BACKGROUND).float()
                share = image_background_share(g.sum(dim=1), background)
                bg = torch.where(annotated, share, bg)
        conf, preds = logits.float().softmax(dim=1).max(dim=1)
        for key, value in (("labels", labels), ("preds", preds), ("confidence", conf),
                           ("off", off), ("bg", bg)):
            out[key].append(value.cpu())
        out["files"] += list(batch.path)
    result = {k: torch.cat(v).numpy() for k, v in out.items() if k != "files"}
    result["files"] = out["files"]
    return result


@torch.no_grad()
def class_background_shares(model: torch.nn.Module, loader, layer_name: str, num_classes: int,
                            device: torch.device, grad_mode: str = "abs") -> np.ndarray:
    """Per class, the mean ``background_share`` of its annotated images: how much of the
    class score's gradient at ``layer_name`` lies on the background. A shortcut in the
    background shows as a large share. ``loader`` yields :class:`loaders.Batch`; the model
    is put in eval mode. Returns ``[num_classes]`` (NaN: no image).
    """
    model.eval()
    sums, counts = np.zeros(num_classes), np.zeros(num_classes)
    for batch in loader:
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        masks, annotated = loaders.batch_masks(batch, device, "the background share")
        grad, _ = score_gradients(model, images, labels, layer_name)
        background = background_weights(masks, annotated)
        share = image_background_share(rectify(grad, grad_mode).sum(dim=1), background)
        keep = annotated & share.isfinite()
        np.add.at(sums, labels[keep].cpu().numpy(), share[keep].cpu().numpy())
        np.add.at(counts, labels[keep].cpu().numpy(), 1)
    with np.errstate(invalid="ignore"):
        return sums / counts


def split_background_shares(model_name: str, model_path, data_name: str, data_dir,
                            split: str, layer: int | str = -1,
                            device: torch.device = torch.device("cpu")) -> np.ndarray:
    """:func:`class_background_shares` of a trained model on ``data_dir/split`` with the
    object masks of ``data_dir/masks/split`` (the layout ``preprocessing/decoy.py`` writes);
    ``layer`` defaults to the first conv. Returns ``[num_classes]``."""
    data_dir = Path(data_dir)
    data = loaders.build_dataset(data_name, data_dir, split, train_transform=False,
                                 mask_dir=data_dir / "masks" / split)
    args = argparse.Namespace(model_name=model_name, data_name=data_name,
                              model_path=str(model_path), in_channels=None, num_classes=None,
                              stem=None)
    model = load_trained_model(args, data.classes, device).model
    name = models.load_modules(model, [layer])[0][0]
    return class_background_shares(model, loaders.make_loader(data, 256, False), name,
                                   len(data.classes), device)


def rank_order(off: np.ndarray) -> np.ndarray:
    """Indices by ``off_mask_share`` descending (ties: dataset order; NaN last)."""
    key = np.where(np.isnan(off), -np.inf, off)
    return np.lexsort((np.arange(len(off)), -key))


def summarise(result: dict) -> dict:
    """Mean shares (and how many images have one) for correct vs misclassified images."""
    correct = result["labels"] == result["preds"]
    summary = {"num_images": int(len(correct)), "accuracy": float(correct.mean()),
               "num_correct": int(correct.sum()), "num_misclassified": int((~correct).sum()),
               "num_annotated": int((~np.isnan(result["bg"])).sum())}
    for key, name in (("off", "off_mask_share"), ("bg", "background_share")):
        for group, members in (("correct", correct), ("misclassified", ~correct)):
            values = result[key][members]
            values = values[~np.isnan(values)]
            summary[f"{name}_{group}"] = float(values.mean()) if len(values) else None
            summary[f"{name}_{group}_n"] = int(len(values))
    return summary


def _fmt(summary: dict, name: str) -> str:
    parts = []
    for group in ("correct", "misclassified"):
        mean, n = summary[f"{name}_{group}"], summary[f"{name}_{group}_n"]
        parts.append(f"{group} {'n/a' if mean is None else f'{mean:.4f}'} (n={n})")
    return "   ".join(parts)


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6f}"


def write_csv(result: dict, order: np.ndarray, classes: list[str], path: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, i in enumerate(order, start=1):
        writer.writerow([rank, result["files"][i], int(result["labels"][i]),
                         classes[result["labels"][i]], int(result["preds"][i]),
                         f"{result['confidence'][i]:.6f}", _cell(result["off"][i]),
                         _cell(result["bg"][i])])
    atomic_write_text(path, text.getvalue())


def main(args: argparse.Namespace) -> dict:
    refuse_overlap(args.out_dir, {"--data_path": args.data_path, "--mask_dir": args.mask_dir,
                                  "--grad_path": args.grad_path, "--high_path": args.high_path,
                                  "--low_path": args.low_path}, "--out_dir")
    device = get_device(args.device, args.device_index)
    mask_dir = loaders.resolve_split(args.mask_dir, args.data_type) if args.mask_dir else None
    dataset = loaders.build_dataset(args.data_name, args.data_path, args.data_type,
                                    args.in_channels, train_transform=False, mask_dir=mask_dir)
    setup = load_trained_model(args, dataset.classes, device)
    args = resolved_args(args, setup)    # args.json records the counts
    model = setup.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)   # only feature-map gradients are needed
    layer = models.load_modules(model, [args.layer])[0][0]
    stats = ChannelStatistics.load(args.grad_path)
    stats.check_model(model, [layer], args.num_classes)
    if not args.allow_foreign_stats:   # an explicit --grad_mode may differ from theirs
        stats.check_settings({"model_name": args.model_name, "data_name": args.data_name,
                              "in_channels": args.in_channels}, weights_fingerprint(model),
                             escape="--allow_foreign_stats")
    args.grad_mode = args.grad_mode or str(stats.settings.get("grad_mode", "abs"))
    loader = loaders.make_loader(dataset, args.batch_size or setup.spec.batch_size, False,
                                 args.workers, device)
    empty = stats.empty_classes()
    if empty:
        warnings.warn(f"{stats.path} has no images of classes "
                      f"{[dataset.classes[c] for c in empty]}: their off_mask_share is left "
                      f"empty (NaN)", stacklevel=2)
    result = diagnose(model, loader, layer, stats.mask(layer), device, args.grad_mode,
                      not args.no_progress, stats.counts > 0)
    order = rank_order(result["off"])
    out = Path(args.out_dir)
    write_csv(result, order, dataset.classes, out / "diagnosis.csv")
    summary = {"layer": layer, "channels": stats.layers[layer], "grad_mode": args.grad_mode,
               "statistics": str(stats.path), **summarise(result),
               "most_strayed": [result["files"][i] for i in order[:args.num_overlays]]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"diagnosed {summary['num_images']} images of {dataset.root} at {layer} "
          f"({summary['channels']} channels, grad_mode {args.grad_mode}); "
          f"top-1 {summary['accuracy']:.4f}")
    print(f"  mean off_mask_share    {_fmt(summary, 'off_mask_share')}")
    if mask_dir is not None:
        print(f"  mean background_share  {_fmt(summary, 'background_share')}")
    print(f"  -> {out / 'diagnosis.csv'}")

    recorder = RunRecorder(out / "runs", args)
    finite = [int(i) for i in order if not np.isnan(result["off"][i])]
    k = min(args.num_overlays, len(finite))
    if k:   # the k most strayed and the k most typical images, in one pass
        picked = finite[:k] + finite[::-1][:k]
        images, maps, titles = overlay_panel(model, dataset, picked, layer, device,
                                             args.grad_mode,
                                             [f"off {result['off'][i]:.2f}" for i in picked])
        for name, part in (("strayed", slice(0, k)), ("typical", slice(k, 2 * k))):
            fig = overlay_figure(images[part], maps[part], titles[part],
                                 out / f"overlays_{name}.png",
                                 suptitle=f"most {name} images ({layer})")
            recorder.add_figure(f"diagnosis/{name}", fig)
    if args.high_path or args.low_path:
        sifted = [loaders.build_dataset(args.data_name, path, "train", args.in_channels,
                                        train_transform=False, allow_empty=True)
                  if path else None for path in (args.high_path, args.low_path)]
        fig = diagnosis_figures(model, sifted[0], sifted[1], layer, out, args.num_overlays,
                                device, args.grad_mode)
        recorder.add_figure("diagnosis/high_low", fig)
    recorder.close()
    return summary


if __name__ == "__main__":
    run_main(main, get_args_parser())
