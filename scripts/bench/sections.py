"""The benchmark sections except the released comparison (``released.py``): each returns
the numbers its report section shows."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import loaders
import models
from core.config import train_parser
from core.grad_calculate import compute_statistics
from scripts.bench.fixtures import (SyntheticImages, build, csv, doctor_loss, feature_shape,
                                    frozen, step_fn, synthetic_batch, write_synthetic_folder)
from scripts.bench.timing import interleaved, peak_memory, ratio

REPO = Path(__file__).resolve().parents[2]


def bench_treatment(args, device, names: list[str]) -> dict:
    """Treatment step ÷ plain step per model (and with J noise draws); memory ratio."""
    out = {}
    batch = synthetic_batch(args.batch_size, args.in_channels, args.image_size,
                            args.num_classes, device, args.seed)
    for name in names:
        print(f"[treatment] {name}", flush=True)
        base = build(name, args, device)
        plain_m, treat_m, noisy_m = base, copy.deepcopy(base), copy.deepcopy(base)
        losses = [doctor_loss(treat_m, args, 0),
                  doctor_loss(noisy_m, args, 0, args.noise_draws, args.noise_delta)]
        try:
            cases = {"plain": step_fn(plain_m, batch, device, args.num_classes),
                     "treat": step_fn(treat_m, batch, device, args.num_classes, losses[0]),
                     "treat_noisy": step_fn(noisy_m, batch, device, args.num_classes,
                                            losses[1])}
            times = interleaved(cases, args.reps, args.warmup, device)
            memory = {k: peak_memory(cases[k], device) for k in ("plain", "treat")}
        finally:
            for loss in losses:
                loss.remove()
        out[name] = {
            "layer": losses[0].layers[0],
            "feature": feature_shape(base, 0, args, device), "times": times, "memory": memory,
            "plain_ms": 1e3 * float(np.median(times["plain"])),
            "images_per_s": args.batch_size / float(np.median(times["plain"])),
            "treat": ratio(times["treat"], times["plain"]),
            "treat_noisy": ratio(times["treat_noisy"], times["plain"]),
            "memory_ratio": memory["treat"] / max(memory["plain"], 1),
        }
    return out


def bench_depth(args, device) -> dict:
    """Treatment ÷ plain step when the constrained layer moves towards the input."""
    out = {}
    batch = synthetic_batch(args.batch_size, args.in_channels, args.image_size,
                            args.num_classes, device, args.seed)
    for name in csv(args.depth_models):
        print(f"[depth] {name}", flush=True)
        base = build(name, args, device)
        num_convs = len(models.load_modules(base))
        layers = [l for l in csv(args.depth_layers, int) if l < num_convs]
        cases = {"plain": step_fn(base, batch, device, args.num_classes)}
        losses = []
        for layer in layers:
            m = copy.deepcopy(base)
            losses.append(doctor_loss(m, args, layer))
            cases[str(layer)] = step_fn(m, batch, device, args.num_classes, losses[-1])
        try:
            times = interleaved(cases, args.reps, args.warmup, device)
        finally:
            for loss in losses:
                loss.remove()
        out[name] = {"num_convs": num_convs, "plain_ms": 1e3 * float(np.median(times["plain"])),
                     "times": times, "layers": {
                         str(l): {"name": loss.layers[0],
                                  "feature": feature_shape(base, l, args, device),
                                  "treat": ratio(times[str(l)], times["plain"])}
                         for l, loss in zip(layers, losses)}}
    return out


def bench_diagnosis(args, device) -> dict:
    """``compute_statistics`` with J noisy draws ÷ the noiseless pass; memory per J."""
    print(f"[diagnosis] {args.diag_model}", flush=True)
    model = frozen(build(args.diag_model, args, device).eval())  # as grad_calculate.py
    layers = [models.load_modules(model, [0])[0][0]]
    data = list(SyntheticImages(args.diag_images, args.diag_batch_size, args.in_channels,
                                args.image_size, args.num_classes, device, args.seed))
    one_batch = data[:1]

    def run(j, delta, batches=data):
        return lambda: compute_statistics(model, batches, layers, args.num_classes, device, j,
                                          delta, "abs", 0.2, progress=False)

    settings = {"J=1, δ=0": (1, 0.0)}
    settings.update({f"J={j}, δ={args.noise_delta:g}": (j, args.noise_delta)
                     for j in csv(args.diag_draws, int)})
    times = interleaved({k: run(*v) for k, v in settings.items()}, args.reps, args.warmup,
                        device)
    base = "J=1, δ=0"
    memory = {k: peak_memory(run(*v, batches=one_batch), device) for k, v in settings.items()}
    return {"model": args.diag_model, "layer": layers[0], "images": args.diag_images,
            "batch_size": args.diag_batch_size, "times": times, "memory": memory,
            "base_s": float(np.median(times[base])),
            "ratios": {k: {"time": ratio(times[k], times[base]),
                           "memory": memory[k] / max(memory[base], 1)}
                       for k in settings if k != base}}


def bench_memory(args, device) -> dict:
    """Peak memory of a diagnosis over more images ÷ fewer images (sums only: flat)."""
    name = args.mem_model or args.diag_model
    print(f"[memory] {name}", flush=True)
    model = frozen(build(name, args, device).eval())
    layers = [models.load_modules(model, [0])[0][0]]
    j = args.mem_draws
    delta = args.noise_delta if j > 1 else 0.0
    counts = csv(args.mem_images, int)
    peaks = {}
    for n in counts:
        data = SyntheticImages(n, args.diag_batch_size, args.in_channels, args.image_size,
                               args.num_classes, device, args.seed)
        start = time.perf_counter()
        peaks[n] = peak_memory(lambda: compute_statistics(
            model, data, layers, args.num_classes, device, j, delta, "abs", 0.2,
            progress=False), device)
        print(f"  {n} images: peak {peaks[n] / 2**20:.1f} MiB "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    return {"model": name, "layer": layers[0], "noise_draws": j, "noise_delta": delta,
            "batch_size": args.diag_batch_size, "peaks": {str(n): p for n, p in peaks.items()},
            "ratio": peaks[counts[-1]] / max(peaks[counts[0]], 1),
            "images": [counts[0], counts[-1]]}


def bench_loader(args, device, fastest: str | None) -> dict:
    """Images/s of the training loader ÷ images/s of training the fastest model."""
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        return {"skipped": f"{data_dir} not found: run bash scripts/prepare_data.sh"}
    spec = loaders.get_spec(args.loader_data)
    workers = args.loader_workers
    if workers is None:
        workers = train_parser().parse_args([]).workers
    dataset = loaders.build_dataset(args.loader_data, data_dir, "train", train_transform=True)
    batch_size = spec.batch_size
    loader = loaders.make_loader(dataset, batch_size, True, workers, device, args.seed)
    limit = args.loader_images or len(dataset)
    name = fastest or "smallcnn"
    print(f"[loader] {args.loader_data}, {workers} workers vs {name}", flush=True)

    def load():
        seen = 0
        for batch in loader:
            batch.image.to(device, non_blocking=True)
            seen += len(batch.label)
            if seen >= limit:
                break
        return seen

    model = models.load_model(name, spec.in_channels, len(dataset.classes),
                              image_size=spec.size).to(device)
    batch = synthetic_batch(batch_size, spec.in_channels, spec.size, len(dataset.classes),
                            device, args.seed)
    step = step_fn(model, batch, device, len(dataset.classes))
    steps = max(1, -(-min(limit, len(dataset)) // batch_size))
    images = {"loader": min(limit, len(dataset)), "train": steps * batch_size}
    times = interleaved({"loader": load, "train": lambda: [step() for _ in range(steps)]},
                        args.reps, args.warmup, device)
    speed = {k: [images[k] / t for t in times[k]] for k in times}
    return {"data": args.loader_data, "data_dir": str(data_dir), "workers": workers,
            "batch_size": batch_size, "model": name, "images": images, "times": times,
            "loader_images_per_s": float(np.median(speed["loader"])),
            "train_images_per_s": float(np.median(speed["train"])),
            "ratio": ratio(speed["loader"], speed["train"])}


def bench_data_paths(args, device) -> dict:
    """In-memory and per-image loader images/s beside smallcnn's training images/s (forward,
    backward, SGD step), same batch, same process, interleaved; 28 px grayscale
    (``fashion_mnist``) and 32 px RGB (``cifar10``) folders of synthetic images, the whole
    training augmentation (crop with padding 4, horizontal flip, normalisation)."""
    out = {}
    batch_size = args.data_batch_size
    with tempfile.TemporaryDirectory() as tmp:
        for data_name in ("fashion_mnist", "cifar10"):
            spec = loaders.get_spec(data_name)
            root = write_synthetic_folder(Path(tmp) / data_name, args.data_images, spec.size,
                                          spec.in_channels, seed=args.seed)
            print(f"[data_paths] {data_name}: {args.data_images} images, batch {batch_size}",
                  flush=True)
            start = time.perf_counter()
            memory_set = loaders.build_dataset(data_name, root, "train", data_mode="memory")
            decode_s = time.perf_counter() - start
            start = time.perf_counter()
            memory_set = loaders.build_dataset(data_name, root, "train", data_mode="memory")
            cache_s = time.perf_counter() - start
            folder_set = loaders.build_dataset(data_name, root, "train", data_mode="folder")
            memory_loader = loaders.make_loader(memory_set, batch_size, True, 0, device,
                                                args.seed)
            folder_loader = loaders.make_loader(folder_set, batch_size, True, 0, device,
                                                args.seed)

            def one_pass(loader):
                seen = 0
                for batch in loader:
                    batch.image.to(device, non_blocking=True)
                    seen += len(batch.label)
                return seen

            torch.manual_seed(args.seed)
            model = models.load_model("smallcnn", spec.in_channels, spec.num_classes,
                                      image_size=spec.size).to(device)
            step = step_fn(model, next(iter(memory_loader)), device, spec.num_classes)
            steps = max(1, args.data_images // batch_size)
            images = {"memory": len(memory_set), "folder": len(folder_set),
                      "train": steps * batch_size}
            times = interleaved({"memory": lambda: one_pass(memory_loader),
                                 "folder": lambda: one_pass(folder_loader),
                                 "train": lambda: [step() for _ in range(steps)]},
                                args.reps, args.warmup, device)
            speed = {k: [images[k] / t for t in times[k]] for k in times}
            out[data_name] = {
                "size": spec.size, "channels": spec.in_channels, "hflip": spec.hflip,
                "batch_size": batch_size, "images": images, "times": times,
                "decode_s": decode_s, "cache_load_s": cache_s,
                **{f"{k}_images_per_s": float(np.median(v)) for k, v in speed.items()},
                "memory_vs_train": ratio(speed["memory"], speed["train"]),
                "folder_vs_train": ratio(speed["folder"], speed["train"]),
                "memory_vs_folder": ratio(speed["memory"], speed["folder"])}
    return out


def bench_quickstart(args) -> dict:
    print("[quickstart] fast=0 bash scripts/quickstart.sh", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, fast="0", result_path=f"{tmp}/output", table_dir=f"{tmp}/table",
                   PYTHON=sys.executable)
        start = time.perf_counter()
        proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=REPO, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
    out = {"seconds": seconds, "returncode": proc.returncode}
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out
