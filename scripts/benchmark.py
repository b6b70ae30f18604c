"""Benchmarks of diagnosis and treatment, as ratios measured in one run.

    python -m scripts.benchmark                          # every section, default sizes
    python -m scripts.benchmark --models resnet34,vgg16 --reps 7
    python -m scripts.benchmark --tiny --out_dir /tmp/b  # CI: small sizes, < 1 min on a CPU

Every number is a ratio of two measurements taken in the same run with interleaved
repetitions (``for r in reps: time A, time B, …``, the order rotated each repetition), so
that load from other jobs hits both sides alike; the tables give the median of the per-rep
ratios and their interquartile range. Sections (``--sections``):

* ``treatment`` — a training step with ``CE + DoctorLoss`` (channel and spatial constraint on
  the last conv, alpha, beta > 0, masks given) ÷ a plain CE step, per model; also with
  ``J = 10, δ = 0.1`` noise draws; peak memory of the treatment step ÷ the plain step.
* ``depth`` — the same ratio when the constrained layer is 0, 2, 5, … from the last conv.
* ``diagnosis`` — ``compute_statistics`` with ``J`` noisy draws ÷ without noise.
* ``memory`` — peak memory of the diagnosis of 10k images ÷ 1k images (should be flat).
* ``loader`` — images/s of the training loader ÷ images/s of the fastest model's training.
* ``data_paths`` — the in-memory data path (``loaders/memory.py``: decoded once, whole-batch
  augmentation) and the per-image path (``--data_mode folder``, no workers), images/s beside
  ``smallcnn``'s training images/s in the same process, at 28 px grayscale and 32 px RGB.
* ``released`` — the released code's computation (``scripts/released_reference.py``) ÷ ours,
  for diagnosis and treatment, after checking that both give the same numbers.
* ``quickstart`` — wall time of ``bash scripts/quickstart.sh`` (off unless ``--quickstart``).

Memory is the peak of *tensor* memory during the measured call: on CUDA
``torch.cuda.max_memory_allocated`` above the level at the start; on the CPU the allocation
and free events that ``torch.profiler`` records (``profile_memory=True``), replayed in time
order — the most bytes allocated within the call and alive at once (the profiler cannot see
frees of tensors made before the call, so those are not credited). Process RSS is not used:
it mixes in the allocator's caching and library memory.

Writes ``OUT_DIR/benchmark.md`` and ``OUT_DIR/benchmark.json`` (raw times included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import loaders
import models
from scripts.bench.report import write_report
from scripts.bench.sections import (bench_data_paths, bench_depth, bench_diagnosis, bench_loader,
                                    bench_memory, bench_quickstart, bench_treatment)
from scripts.bench.fixtures import csv
from scripts.bench.released import bench_released
from utils import add_device_args, get_device, set_seed
from utils import validate

SECTIONS = ("treatment", "depth", "diagnosis", "memory", "loader", "data_paths", "released",
            "quickstart")
TINY = dict(models="smallcnn,squeezenet", batch_size=4, reps=3, depth_models="smallcnn",
            depth_layers="0,2", diag_model="smallcnn", diag_images=32, diag_batch_size=16,
            mem_images="32,128", loader_images=128, data_images=256, released_images=16,
            threads=1)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="all",
                   help="comma-separated models for the treatment section, or 'all'")
    p.add_argument("--batch_size", type=int, default=32, help="treatment batch size")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--in_channels", type=int, default=3)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per ratio")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each case first")
    p.add_argument("--alpha", type=float, default=0.078, help="channel weight (ours)")
    p.add_argument("--beta", type=float, default=1.0, help="spatial weight")
    p.add_argument("--expand_px", type=int, default=2, help="mask expansion e")
    p.add_argument("--noise_draws", type=int, default=10, help="J of the noisy treatment")
    p.add_argument("--noise_delta", type=float, default=0.1, help="δ of the noisy runs")
    p.add_argument("--depth_models", default="resnet34,vgg16")
    p.add_argument("--depth_layers", default="0,2,5,10",
                   help="constrained layers (index from the last conv)")
    p.add_argument("--diag_model", default="resnet34", choices=sorted(models.MODELS))
    p.add_argument("--diag_images", type=int, default=1000)
    p.add_argument("--diag_batch_size", type=int, default=64)
    p.add_argument("--diag_draws", default="1,5,10", help="J values of the diagnosis")
    p.add_argument("--mem_model", default=None,
                   help="model of the memory-vs-images section (default: --diag_model)")
    p.add_argument("--mem_images", default="1000,10000",
                   help="image counts; the peak of the last ÷ the first is reported")
    p.add_argument("--mem_draws", type=int, default=1,
                   help="J of the memory-vs-images diagnosis (δ = --noise_delta if J > 1)")
    p.add_argument("--loader_data", default="decoy_digits", choices=sorted(loaders.DATASETS))
    p.add_argument("--data_dir", default="data/decoy_digits")
    p.add_argument("--loader_images", type=int, default=0,
                   help="images per loader pass (0 = one epoch)")
    p.add_argument("--loader_workers", type=int, default=None,
                   help="default: train.py's --workers default")
    p.add_argument("--data_images", type=int, default=2560,
                   help="images per synthetic folder of the data_paths section")
    p.add_argument("--data_batch_size", type=int, default=128,
                   help="batch of the data_paths section (released: 128 at 28/32 px)")
    p.add_argument("--released_model", default=None,
                   help="model of the released comparison (default: --diag_model)")
    p.add_argument("--released_images", type=int, default=128,
                   help="images of the released-vs-ours diagnosis")
    p.add_argument("--released_layers", default="all",
                   help="layers of the released-vs-ours diagnosis (the release does all)")
    p.add_argument("--released_alpha", type=float, default=10.0, help="released channel weight")
    p.add_argument("--sections", default=",".join(s for s in SECTIONS if s != "quickstart"),
                   help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--quickstart", action="store_true",
                   help="also time 'fast=0 bash scripts/quickstart.sh' (minutes)")
    p.add_argument("--tiny", action="store_true",
                   help=f"CI sizes (explicit flags still win): {TINY}")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", default="results")
    add_device_args(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = get_args_parser()
    if parser.parse_args(argv).tiny:
        parser.set_defaults(**TINY)
    return validate.parse_args(parser, argv)



def main(args: argparse.Namespace) -> dict:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    device = get_device(args.device, args.device_index)
    sections = set(csv(args.sections)) | ({"quickstart"} if args.quickstart else set())
    unknown = sections - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    names = sorted(models.MODELS) if args.models == "all" else csv(args.models)
    for name in names + csv(args.depth_models):
        if name not in models.MODELS:
            raise KeyError(f"unknown model {name!r}; valid: {', '.join(sorted(models.MODELS))}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {"environment": {
        "command": " ".join(["python", "-m", "scripts.benchmark"] + sys.argv[1:]),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "torch.profiler memory events"}, "args": vars(args)}
    if "treatment" in sections:
        results["treatment"] = bench_treatment(args, device, names)
    if "depth" in sections:
        results["depth"] = bench_depth(args, device)
    if "diagnosis" in sections:
        results["diagnosis"] = bench_diagnosis(args, device)
    if "memory" in sections:
        results["memory"] = bench_memory(args, device)
    if "loader" in sections:
        fastest = max(results["treatment"].items(), key=lambda kv: kv[1]["images_per_s"])[0] \
            if results.get("treatment") else None
        results["loader"] = bench_loader(args, device, fastest)
    if "data_paths" in sections:
        results["data_paths"] = bench_data_paths(args, device)
    if "released" in sections:
        results["released"] = bench_released(args, device)
    if "quickstart" in sections:
        results["quickstart"] = bench_quickstart(args)
    results["environment"]["seconds"] = time.perf_counter() - start
    (out_dir / "benchmark.json").write_text(json.dumps(results, indent=1, default=str))
    path = write_report(results, args, out_dir)
    print(path.read_text())
    print(f"wrote {path} and {out_dir / 'benchmark.json'} "
          f"({results['environment']['seconds']:.0f} s)")
    return results


def failed_checks(results: dict) -> list[str]:
    checks = results.get("released", {}).get("checks", {})
    return [k for k, v in checks.items() if v.get("ok") is False]


if __name__ == "__main__":
    res = main(parse_args())
    failed = failed_checks(res)
    if failed:
        sys.exit(f"released-vs-ours checks failed: {', '.join(failed)}")
