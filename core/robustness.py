"""Discovery 2 (paper Fig. 3): feature noise moves adversarial samples, not normal ones.

    python core/robustness.py --model_name resnet34 --data_name decoy_digits \
        --model_path output/resnet34_decoy_digits/models/model_ori.pth \
        --data_dir data/decoy_digits --out_dir results

``N`` correctly classified test images and their FGSM adversarial versions (only those whose
prediction flips are kept) are run through the model with uniform noise ``U[-δ, δ]`` added
to the output of one conv layer, ``repeats`` times per image and per ``δ``. For each ``δ`` the
share of predictions equal to the true label is reported for the normal and the adversarial
images, and the share of adversarial predictions still equal to the adversarial label. The
paper: normal images stay correct up to δ ≈ 0.3, adversarial ones return to their true label.

Writes ``out_dir/<name>.csv``, ``<name>.png`` and ``<name>.json`` (settings and counts) and
prints the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401

import matplotlib  # noqa: E402

matplotlib.use("Agg")   # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import loaders  # noqa: E402
from core.entry import add_model_data_args, load_trained_model  # noqa: E402
from utils.cli import HelpFormatter, run_main  # noqa: E402
import models  # noqa: E402
from core.gradients import eval_mode  # noqa: E402
from core.hooks import FeatureHooks  # noqa: E402
from core.visualize import save_figure  # noqa: E402
from utils import add_device_args, atomic_write_text, get_device, set_seed  # noqa: E402

DEFAULT_DELTAS = "0,0.05,0.1,0.2,0.3,0.5,0.8,1.0"
CSV_COLUMNS = ("delta", "normal_true", "adversarial_true", "adversarial_same_false",
               "num_normal", "num_adversarial", "repeats")


def _stats_view(values: Sequence[float] | None, like: torch.Tensor) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.as_tensor(list(values), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015) in pixel space.

    Args:
        images: normalised inputs ``[B, C, H, W]``, i.e. ``(x − mean) / std`` of pixels
            ``x ∈ [0, 1]`` (``mean``/``std`` None: the inputs are the pixels).
        labels: ``[B]`` true classes.
        eps: step in pixel units (8/255 is the usual budget).

    Returns the normalised adversarial images
    ``(clamp(x + eps·sign(∇_x CE), 0, 1) − mean) / std`` (``[B, C, H, W]``, detached). The
    gradient is taken per sample (summed loss) with the model in eval mode (mode restored).
    """
    mean_t, std_t = _stats_view(mean, images), _stats_view(std, images)
    pixels = images.detach() * std_t + mean_t if mean_t is not None else images.detach()
    pixels = pixels.clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        inputs = (pixels - mean_t) / std_t if mean_t is not None else pixels
        loss = F.cross_entropy(model(inputs), labels, reduction="sum")
        grad, = torch.autograd.grad(loss, pixels)
    adversarial = (pixels.detach() + eps * grad.sign()).clamp(0.0, 1.0)
    return (adversarial - mean_t) / std_t if mean_t is not None else adversarial


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions ``[B]`` in batches (eval mode is the caller's business)."""
    return torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(batch_size)])


def correct_images(model: nn.Module, dataset, num_images: int, device: torch.device,
                   seed: int = 0, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``num_images`` correctly classified items of ``dataset`` (in a seeded random
    order) as ``(images [N, C, H, W], labels [N])`` on ``device``."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    images, labels = [], []
    found = 0
    for start in range(0, len(order), batch_size):
        items = [dataset[i] for i in order[start:start + batch_size]]
        x = torch.stack([it.image for it in items]).to(device)
        y = torch.tensor([int(it.label) for it in items], device=device)
        keep = predict(model, x, batch_size) == y
        images.append(x[keep])
        labels.append(y[keep])
        found += int(keep.sum())
        if found >= num_images:
            break
    images, labels = torch.cat(images)[:num_images], torch.cat(labels)[:num_images]
    # re-check on the final tensor, batched as the noise runs will be, so δ = 0 is exact
    keep = predict(model, images, batch_size) == labels
    return images[keep], labels[keep]


@torch.no_grad()
def noisy_predictions(model: nn.Module, images: torch.Tensor, layer: int | str, delta: float,
                      repeats: int = 10, batch_size: int = 256) -> torch.Tensor:
    """Predictions ``[repeats, B]`` with ``U[-δ, δ]`` noise added to ``layer``'s output, drawn
    afresh for every repeat (:class:`core.hooks.FeatureHooks`)."""
    with FeatureHooks(model, [layer], noise_delta=delta):
        return torch.stack([predict(model, images, batch_size) for _ in range(repeats)])


def noise_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 adversarial: torch.Tensor, adversarial_labels: torch.Tensor,
                 adversarial_true: torch.Tensor, deltas: Sequence[float], layer: int | str,
                 repeats: int = 10, batch_size: int = 256) -> list[dict]:
    """One row per ``δ``: share of noisy predictions equal to the true label for the normal
    images (``normal_true``) and the adversarial ones (``adversarial_true``), and equal to the
    adversarial label (``adversarial_same_false``). Shares are over images × repeats; a share
    over no images is NaN."""
    model.eval()
    rows = []
    nan = float("nan")
    for delta in deltas:
        normal = noisy_predictions(model, images, layer, delta, repeats, batch_size)
        row = {"delta": float(delta),
               "normal_true": (normal == labels).float().mean().item() if len(labels) else nan,
               "adversarial_true": nan, "adversarial_same_false": nan,
               "num_normal": len(labels), "num_adversarial": len(adversarial_labels),
               "repeats": repeats}
        if len(adversarial_labels):
            adv = noisy_predictions(model, adversarial, layer, delta, repeats, batch_size)
            row["adversarial_true"] = (adv == adversarial_true).float().mean().item()
            row["adversarial_same_false"] = (adv == adversarial_labels).float().mean().item()
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'delta':>6s}  {'normal→true':>12s}  {'adv→true':>9s}  {'adv→adv label':>13s}"]
    lines += [f"{r['delta']:>6.3f}  {r['normal_true']:>12.3f}  {r['adversarial_true']:>9.3f}  "
              f"{r['adversarial_same_false']:>13.3f}" for r in rows]
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: str | Path, title: str = ""):
    """Fig. 3: share of predictions at the true label vs noise range ``δ`` (PNG at ``path``)."""
    deltas = [r["delta"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(deltas, [r["normal_true"] for r in rows], "o-", label="normal → true label")
    ax.plot(deltas, [r["adversarial_true"] for r in rows], "s-",
            label="adversarial → true label")
    ax.plot(deltas, [r["adversarial_same_false"] for r in rows], "^--",
            label="adversarial → adversarial label")
    ax.set_xlabel("noise range δ (U[−δ, δ] at the layer)")
    ax.set_ylabel("share of predictions")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def write_csv(rows: list[dict], path: str | Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in CSV_COLUMNS} for r in rows)
    atomic_write_text(path, text.getvalue())


def parse_number(text: str) -> float:
    """``'8/255'`` or ``'0.03'`` → float."""
    return float(Fraction(text.strip()))


def parse_deltas(text: str) -> list[float]:
    return [parse_number(t) for t in text.split(",") if t.strip()]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--data_dir", default="data/decoy_digits", help="holds the split folder")
    p.add_argument("--data_type", default="test", help="split to draw the images from")
    p.add_argument("--num_images", type=int, default=100,
                   help="correctly classified images to use (paper: 100)")
    p.add_argument("--eps", type=parse_number, default="8/255",
                   help="FGSM step in pixel units, e.g. 8/255")
    p.add_argument("--deltas", type=parse_deltas, default=DEFAULT_DELTAS,
                   help="comma-separated noise ranges δ")
    p.add_argument("--repeats", type=int, default=10, help="noise draws per image (paper: 10)")
    p.add_argument("--layer", default=None,
                   help="conv layer to perturb (index from the last conv or module name) "
                        "(default: one chosen at random from --seed)")
    p.add_argument("--batch_size", type=int, default=256, help="images per batch")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the image choice, the layer choice and the noise")
    p.add_argument("--out_dir", default="results", help="output folder: CSV, PNG, JSON")
    p.add_argument("--name", default="noise_robustness", help="output file stem")
    add_device_args(p)
    return p


def main(args: argparse.Namespace) -> list[dict]:
    set_seed(args.seed)
    device = get_device(args.device, args.device_index)
    dataset = loaders.build_dataset(args.data_name, args.data_dir, args.data_type,
                                    args.in_channels, train_transform=False)
    setup = load_trained_model(args, dataset.classes, device)
    mean, std = loaders.normalization_stats(setup.spec, setup.in_channels)
    model = setup.model.eval()
    convs = models.load_modules(model)
    layer = args.layer if args.layer is not None else random.Random(args.seed).randrange(len(convs))
    layer_name = models.load_modules(model, [layer])[0][0]

    images, labels = correct_images(model, dataset, args.num_images, device, args.seed,
                                    args.batch_size)
    if len(labels) == 0:
        raise ValueError(f"no correctly classified images in {args.data_dir}/{args.data_type}")
    adversarial = torch.cat([fgsm(model, x, y, args.eps, mean, std) for x, y in
                             zip(images.split(args.batch_size), labels.split(args.batch_size))])
    adversarial_pred = predict(model, adversarial, args.batch_size)
    flipped = adversarial_pred != labels
    print(f"{len(labels)} correctly classified {args.data_type} images; FGSM eps "
          f"{args.eps:.4f} flips {int(flipped.sum())} of them; noise at {layer_name} "
          f"(index {[n for n, _ in convs].index(layer_name)} of {len(convs)} convs from the last)")
    rows = noise_curves(model, images, labels, adversarial[flipped], adversarial_pred[flipped],
                        labels[flipped], args.deltas, layer_name, args.repeats, args.batch_size)
    print(format_table(rows))

    out = Path(args.out_dir)
    write_csv(rows, out / f"{args.name}.csv")
    plot_curves(rows, out / f"{args.name}.png",
                f"{args.model_name} on {args.data_name}, noise at {layer_name}; "
                f"{len(labels)} normal / {int(flipped.sum())} FGSM (ε={args.eps:.3f})")
    summary = {"model_path": str(args.model_path), "model_name": args.model_name,
               "data_dir": str(args.data_dir), "data_type": args.data_type,
               "layer": layer_name, "eps": args.eps, "repeats": args.repeats,
               "seed": args.seed, "num_normal": len(labels),
               "num_adversarial": int(flipped.sum()),
               "rows": [{k: (None if v != v else v) for k, v in r.items()} for r in rows]}
    atomic_write_text(out / f"{args.name}.json", json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / args.name}.csv/.png/.json")
    return rows


if __name__ == "__main__":
    run_main(main, get_args_parser())
