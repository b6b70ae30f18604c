"""Evaluate a trained classifier: top-1/top-5, per-class accuracy, confusion matrix."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import loaders
from train import evaluate
from utils import add_device_args, atomic_write_text, get_device
from core.entry import add_model_data_args, load_trained_model
from utils.cli import HelpFormatter, run_main


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--data_dir", "--data_path", dest="data_dir", default="data/decoy_digits",
                   help="dataset root holding the --data_type folder, or the folder of class "
                        "folders to evaluate (released --data_path, e.g. data/cifar10/test)")
    p.add_argument("--data_type", default="test",
                   help="split folder to evaluate when --data_dir holds it")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per batch (default: 128 at 28/32 px, 32 at 96/224 px)")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--result_path", default=None,
                   help="JSON output (default: test_<split folder>.json beside --model_path)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bar")
    add_device_args(p)
    return p


def format_report(result: dict) -> str:
    lines = [f"top-1 {result['top1']:.4f}   top-5 {result['top5']:.4f}   "
             f"({result['num_images']} images)", "", "per-class accuracy:"]
    for name, acc, n in zip(result["classes"], result["per_class"], result["support"]):
        lines.append(f"  {name:>20s}  {acc:.4f}  (n={n})" if acc is not None
                     else f"  {name:>20s}  n/a     (n=0)")
    cm = np.asarray(result["confusion_matrix"])
    width = max(4, len(str(cm.max())) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * 6 + "".join(f"{j:>{width}d}" for j in range(len(cm)))]
    lines += [f"{i:>5d} " + "".join(f"{v:>{width}d}" for v in row) for i, row in enumerate(cm)]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    device = get_device(args.device, args.device_index)
    dataset = loaders.build_dataset(args.data_name, args.data_dir, args.data_type,
                                    args.in_channels, train_transform=False)
    setup = load_trained_model(args, dataset.classes, device)
    loader = loaders.make_loader(dataset, args.batch_size or setup.spec.batch_size, False,
                                 args.workers, device)
    meter = evaluate(setup.model, loader, device, setup.num_classes, not args.no_progress)
    per_class = meter.per_class()
    split = Path(dataset.root).resolve().name   # --data_type, or the folder --data_path names
    result = {
        "model_path": str(args.model_path), "model_name": args.model_name,
        "data_dir": str(args.data_dir), "data_type": split,
        "num_images": meter.count, "top1": meter.top1, "top5": meter.top5, "loss": meter.loss,
        "classes": dataset.classes,
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
        "support": meter.cm.sum(axis=1).tolist(),
        "confusion_matrix": meter.cm.tolist(),
    }
    print(format_report(result))
    out = Path(args.result_path or Path(args.model_path).parent / f"test_{split}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    run_main(main, get_args_parser())
