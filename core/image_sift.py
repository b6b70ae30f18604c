"""Sift images by prediction confidence (README: Method).

    python core/image_sift.py --model_name resnet34 --data_name decoy_digits \
        --model_path output/resnet34_decoy_digits/models/model_ori.pth \
        --data_path data/decoy_digits --image_path output/resnet34_decoy_digits/sift/high \
        --mode high --num_images 50

* ``--mode high`` — per class, the ``T`` correctly classified images with the highest softmax
  confidence (the images the channel statistics are computed on).
* ``--mode low`` — per class, the ``N`` candidates for annotation: misclassified images first
  (most confident wrong prediction first), then correct ones with the lowest confidence.

Copies the chosen files to ``image_path/<class>/<file>`` and writes ``image_path/classes.txt``
(label order) and ``image_path/sift.csv`` (file, label, class_name, prediction, confidence,
p_true). Re-running removes the images a previous run listed in ``sift.csv`` and this run did
not choose; other files (e.g. labelme ``*.json`` annotations) are left alone.
"""
from __future__ import annotations

import argparse
import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import loaders  # noqa: E402
from utils import (add_device_args, atomic_write, atomic_write_text, get_device,  # noqa: E402
                   safe_child)
from core.entry import add_model_data_args, load_trained_model  # noqa: E402
from utils.cli import HelpFormatter, run_main  # noqa: E402
from utils.io import refuse_overlap  # noqa: E402
from utils.distributed import (DistInfo, ShardSampler, all_gather_objects, cleanup,  # noqa: E402
                               init_distributed)

MODES = ("high", "low")
CSV_COLUMNS = ("file", "label", "class_name", "prediction", "confidence", "p_true")
DEFAULT_NUM_IMAGES = {"high": 50, "low": 20}   # released scripts: 50; paper annotated 20


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--data_path", default="data/decoy_digits",
                   help="dataset root holding the --data_type folder, or the folder of class "
                        "folders to sift (released: data/cifar10/train)")
    p.add_argument("--data_type", default="train",
                   help="split folder to sift when --data_path holds it")
    p.add_argument("--image_path", default="output/sift/high",
                   help="output folder: <class>/<file> copies, classes.txt, sift.csv")
    p.add_argument("--mode", default="high", choices=MODES,
                   help="high: confident correct images (released); low: annotation candidates")
    p.add_argument("--num_images", type=int, default=None,
                   help="images per class (default: 50 for high, 20 for low)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per batch (default: 128 at 28/32 px, 32 at 96/224 px)")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bar")
    add_device_args(p)
    return p


# -- selection (pure) -------------------------------------------------------------------------
def select_high(labels: np.ndarray, preds: np.ndarray, confidences: np.ndarray,
                num_classes: int, num_images: int) -> list[np.ndarray]:
    """Per class, the indices of the ``num_images`` correctly classified samples with the
    highest confidence, most confident first (ties: lower index first).

    Args: ``labels``, ``preds`` ``[N]`` ints; ``confidences`` ``[N]`` softmax probability of
    the predicted class. Returns ``num_classes`` index arrays (possibly shorter than asked).
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    confidences = np.asarray(confidences, dtype=np.float64)
    index = np.arange(len(labels))
    chosen = []
    for c in range(num_classes):
        pool = index[(labels == c) & (preds == c)]
        order = np.lexsort((pool, -confidences[pool]))    # last key is the primary one
        chosen.append(pool[order][:num_images])
    return chosen


def select_low(labels: np.ndarray, preds: np.ndarray, confidences: np.ndarray,
               num_classes: int, num_images: int) -> list[np.ndarray]:
    """Per class, the indices of ``num_images`` annotation candidates: misclassified samples
    first, the most confident wrong prediction first; then correct ones, least confident
    first (ties: lower index first). Same arguments as :func:`select_high`.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    confidences = np.asarray(confidences, dtype=np.float64)
    index = np.arange(len(labels))
    chosen = []
    for c in range(num_classes):
        pool = index[labels == c]
        correct = preds[pool] == c
        key = np.where(correct, confidences[pool], -confidences[pool])
        order = np.lexsort((pool, key, correct))          # wrong (False) before correct
        chosen.append(pool[order][:num_images])
    return chosen


SELECTORS = {"high": select_high, "low": select_low}


# -- model pass -------------------------------------------------------------------------------
@dataclass
class Predictions:
    """One eval pass over a dataset, in dataset order."""
    labels: np.ndarray       # [N] true class
    preds: np.ndarray        # [N] predicted class
    confidence: np.ndarray   # [N] softmax probability of the prediction
    p_true: np.ndarray       # [N] softmax probability of the true class


@dataclass
class Selection:
    """What :func:`sift` chose: ``indices[c]`` are dataset indices of class ``c``, in order."""
    mode: str
    num_images: int
    indices: list[np.ndarray]
    predictions: Predictions
    files: list[str]          # relative paths "<class>/<file>" of the whole dataset
    classes: list[str]

    def chosen(self) -> list[int]:
        return [int(i) for idx in self.indices for i in idx]

    def rows(self) -> list[dict]:
        p = self.predictions
        return [{"file": self.files[i], "label": int(p.labels[i]),
                 "class_name": self.classes[p.labels[i]], "prediction": int(p.preds[i]),
                 "confidence": f"{p.confidence[i]:.6f}", "p_true": f"{p.p_true[i]:.6f}"}
                for i in self.chosen()]


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device,
            progress: bool = True, info: DistInfo | None = None) -> Predictions:
    """Softmax predictions of ``model`` (eval mode) over ``loader`` (not shuffled).

    Under torchrun ``loader`` reads this rank's shard; the shards are gathered and put back
    in dataset order, so every rank sees the predictions one process would compute.
    """
    model.eval()
    labels, preds, conf, p_true = [], [], [], []
    for batch in tqdm(loader, desc="sift", leave=False, disable=not progress):
        images = batch.image.to(device, non_blocking=True)
        y = batch.label.to(device, non_blocking=True)
        probs = model(images).float().softmax(dim=1)
        c, p = probs.max(dim=1)
        labels.append(y.cpu())
        preds.append(p.cpu())
        conf.append(c.cpu())
        p_true.append(probs.gather(1, y[:, None])[:, 0].cpu())
    local = [torch.cat(xs).numpy() for xs in (labels, preds, conf, p_true)]
    if info is None or not info.enabled:
        return Predictions(*local)
    shards = all_gather_objects((list(loader.sampler), local), info)
    order = np.concatenate([np.asarray(idx, dtype=np.int64) for idx, _ in shards])
    merged = []
    for k in range(4):
        values = np.concatenate([arrays[k] for _, arrays in shards])
        out = np.empty_like(values)
        out[order] = values
        merged.append(out)
    return Predictions(*merged)


def sift(model: torch.nn.Module, dataset, device: torch.device, mode: str = "high",
         num_images: int = 50, num_classes: int | None = None, batch_size: int = 64,
         workers: int = 0, progress: bool = True, info: DistInfo | None = None) -> Selection:
    """Run ``model`` once over ``dataset`` (items ``(image, label, rel_path)``, eval
    transforms) and choose ``num_images`` per class (:func:`select_high` / :func:`select_low`).

    A class with fewer qualifying images keeps what it has and a warning names it.
    """
    if mode not in SELECTORS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    classes = list(dataset.classes)
    num_classes = num_classes or len(classes)
    sampler = ShardSampler(len(dataset), info) if info is not None and info.enabled else None
    loader = loaders.make_loader(dataset, batch_size, False, workers, device, sampler=sampler)
    pred = predict(model, loader, device, progress, info)
    indices = SELECTORS[mode](pred.labels, pred.preds, pred.confidence, num_classes, num_images)
    short = [f"{classes[c]!r} (label {c}): {len(idx)} of {num_images}"
             for c, idx in enumerate(indices) if len(idx) < num_images]
    if short:
        what = "correctly classified images" if mode == "high" else "images"
        warnings.warn(f"{len(short)} classes have fewer {what} than asked, keeping what exists: "
                      + "; ".join(short), stacklevel=2)
    return Selection(mode, num_images, indices, pred, [rel for rel, _ in dataset.samples],
                     classes)


# -- files ------------------------------------------------------------------------------------
def previous_files(image_path: Path) -> list[str]:
    """Files listed in ``image_path/sift.csv`` by an earlier run (empty if none)."""
    listing = image_path / "sift.csv"
    if not listing.is_file():
        return []
    with listing.open(newline="") as f:
        return [row["file"] for row in csv.DictReader(f) if row.get("file")]


def write_selection(selection: Selection, source_root: str | Path,
                    image_path: str | Path) -> Path:
    """Copy the chosen images to ``image_path`` (same ``<class>/<file>`` layout) and write
    ``classes.txt`` and ``sift.csv``; drop images an earlier run chose and this one did not."""
    source_root, image_path = Path(source_root), Path(image_path)
    refuse_overlap(image_path, {"--data_path": source_root}, "--image_path")
    image_path.mkdir(parents=True, exist_ok=True)
    rows = selection.rows()
    keep = {row["file"] for row in rows}
    for rel in previous_files(image_path):
        stale = safe_child(image_path, rel)
        if rel not in keep and stale.is_file():
            stale.unlink()
    for rel in keep:
        with atomic_write(safe_child(image_path, rel), "wb") as f:
            f.write((source_root / rel).read_bytes())
    atomic_write_text(image_path / "classes.txt", "\n".join(selection.classes) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(image_path / "sift.csv", text.getvalue())
    return image_path / "sift.csv"


def main(args: argparse.Namespace) -> Selection:
    info, device = init_distributed(get_device(args.device, args.device_index))
    args.num_images = args.num_images or DEFAULT_NUM_IMAGES[args.mode]
    refuse_overlap(args.image_path, {"--data_path": args.data_path}, "--image_path")
    dataset = loaders.build_dataset(args.data_name, args.data_path, args.data_type,
                                    args.in_channels, train_transform=False)
    setup = load_trained_model(args, dataset.classes, device)
    try:
        selection = sift(setup.model, dataset, device, args.mode, args.num_images,
                         setup.num_classes, args.batch_size or setup.spec.batch_size,
                         args.workers, info.is_main and not args.no_progress, info)
    finally:
        cleanup()
    if not info.is_main:
        return selection
    listing = write_selection(selection, dataset.root, args.image_path)
    if args.data_name == loaders.FOLDER:   # sifted images keep their dataset's normalisation
        from loaders.custom import STATS_FILE, train_split
        stats = train_split(args.data_path) / STATS_FILE
        atomic_write_text(Path(args.image_path) / STATS_FILE, stats.read_text())
    p = selection.predictions
    counts = [len(idx) for idx in selection.indices]
    print(f"{len(dataset)} images of {dataset.root}: top-1 {np.mean(p.labels == p.preds):.4f}; "
          f"kept {sum(counts)} ({args.mode} confidence, {min(counts)}..{max(counts)} per class) "
          f"-> {Path(args.image_path)}  [{listing.name}]")
    return selection


if __name__ == "__main__":
    run_main(main, get_args_parser())
