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
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # fewer profiler log lines

import numpy as np  # noqa: E402
import torch  # noqa: E402

import loaders  # noqa: E402
import models  # noqa: E402
import train  # noqa: E402
from core.channel_stats import ChannelStatistics  # noqa: E402
from core.grad_calculate import compute_statistics  # noqa: E402
from core.grad_constraint import DoctorLoss  # noqa: E402
from scripts.released_reference import (ReleasedGradConstraint,  # noqa: E402
                                        released_statistics)
from utils import add_device_args, get_device, set_seed  # noqa: E402

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
    return parser.parse_args(argv)


def csv(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


# -- measuring ------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(cases: dict[str, Callable[[], object]], reps: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each case, ``reps`` times, cases interleaved in rotating order."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(timed(cases[name], device))
    return times


def ratio(num: list[float], den: list[float]) -> dict:
    """Median and spread of the per-repetition ratios ``num[r] / den[r]``."""
    r = np.asarray(num, dtype=float) / np.asarray(den, dtype=float)
    q25, med, q75 = np.percentile(r, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75),
            "min": float(r.min()), "max": float(r.max()), "n": int(r.size)}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak tensor bytes of ``fn()`` on ``device``: above the start level (CUDA), or
    :func:`host_peak_memory` (CPU)."""
    if device.type != "cuda":
        return host_peak_memory(fn)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def host_peak_memory(fn: Callable[[], object]) -> int:
    """The most CPU tensor bytes allocated within ``fn()`` and alive at once, from the
    profiler's memory events replayed in time order."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


# -- synthetic inputs -----------------------------------------------------------------------
def synthetic_batch(batch_size: int, in_channels: int, size: int, num_classes: int,
                    device: torch.device, seed: int = 0) -> tuple:
    """``(images, labels, paths, masks, annotated)`` as a masked loader yields it; every
    image annotated, its object a random rectangle."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, in_channels, size, size, generator=g)
    labels = torch.arange(batch_size) % num_classes
    masks = torch.zeros(batch_size, 1, size, size)
    for b in range(batch_size):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        masks[b, :, y0:y0 + h, x0:x0 + w] = 1
    return (images.to(device), labels.to(device), [f"img{b}.png" for b in range(batch_size)],
            masks.to(device), torch.ones(batch_size, dtype=torch.bool))


class SyntheticImages:
    """``num_images`` random images in batches, made lazily (a loader's memory profile)."""

    def __init__(self, num_images, batch_size, in_channels, size, num_classes, device, seed=0):
        self.num_images, self.batch_size = num_images, batch_size
        self.shape = (in_channels, size, size)
        self.num_classes, self.device, self.seed = num_classes, device, seed

    def __len__(self) -> int:
        return -(-self.num_images // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.num_images, self.batch_size):
            n = min(self.batch_size, self.num_images - start)
            images = torch.randn(n, *self.shape, generator=g)
            labels = (torch.arange(start, start + n) % self.num_classes)
            yield images.to(self.device), labels.to(self.device)


def random_statistics(model, layers, num_classes, seed=0) -> ChannelStatistics:
    """Statistics with random class sums (only the masks matter for timing)."""
    stats = ChannelStatistics.for_model(model, layers, num_classes)
    g = torch.Generator().manual_seed(seed)
    for name, sums in stats.sums.items():
        stats.sums[name] = torch.rand(sums.shape, generator=g, dtype=torch.float64)
    stats.counts[:] = 1
    return stats


def build(name: str, args, device, in_channels=None) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    return models.load_model(name, in_channels or args.in_channels, args.num_classes,
                             image_size=args.image_size).to(device)


def step_fn(model, batch, device, num_classes, extra_loss=None) -> Callable[[], dict]:
    """One training step through ``train.train_one_epoch`` (forward, CE, extra loss,
    backward, SGD step) on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    return lambda: train.train_one_epoch(model, [batch], optimizer, device, 0, num_classes,
                                         extra_loss, progress=False)


def feature_shape(model, layer, args, device) -> list[int]:
    (_, module), = models.load_modules(model, [layer])
    shapes = []
    handle = module.register_forward_hook(lambda m, i, o: shapes.append(list(o.shape[1:])))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, args.in_channels, args.image_size, args.image_size,
                                     device=device))
    finally:
        handle.remove()
    return shapes[0]


# -- sections -------------------------------------------------------------------------------
def doctor_loss(model, args, layer, noise_draws=1, noise_delta=0.0) -> DoctorLoss:
    stats = random_statistics(model, [layer], args.num_classes, args.seed)
    return DoctorLoss(model, stats, [layer], [layer], alpha=args.alpha, beta=args.beta,
                      noise_draws=noise_draws, noise_delta=noise_delta,
                      expand_px=args.expand_px, num_classes=args.num_classes)


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
            "layer": losses[0].channel_layers[0],
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
                         str(l): {"name": loss.channel_layers[0],
                                  "feature": feature_shape(base, l, args, device),
                                  "treat": ratio(times[str(l)], times["plain"])}
                         for l, loss in zip(layers, losses)}}
    return out


def frozen(model: torch.nn.Module, on: bool = True) -> torch.nn.Module:
    """Freeze (or unfreeze) the parameters: the diagnosis needs feature gradients only."""
    for p in model.parameters():
        p.requires_grad_(not on)
    return model


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
        workers = train.get_args_parser().parse_args([]).workers
    dataset = loaders.build_dataset(args.loader_data, data_dir, "train", train_transform=True)
    batch_size = spec.batch_size
    loader = loaders.make_loader(dataset, batch_size, True, workers, device, args.seed)
    limit = args.loader_images or len(dataset)
    name = fastest or "smallcnn"
    print(f"[loader] {args.loader_data}, {workers} workers vs {name}", flush=True)

    def load():
        seen = 0
        for batch in loader:
            batch[0].to(device, non_blocking=True)
            seen += len(batch[1])
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


def write_synthetic_folder(root: Path, num_images: int, size: int, channels: int,
                           num_classes: int = 10, seed: int = 0) -> Path:
    """``root/train/c<k>/<i>.png`` + ``classes.txt``: smooth random images (an upsampled
    8 × 8 pattern plus mild noise), so PNG decoding costs what it costs on real photos."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(num_classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for name in names:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
    mode = "L" if channels == 1 else "RGB"
    for i in range(num_images):
        coarse = rng.integers(0, 256, (8, 8, channels), dtype=np.uint8)
        img = Image.fromarray(coarse[..., 0] if channels == 1 else coarse, mode)
        pixels = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode).save(root / "train" / names[i % num_classes] / f"{i}.png")
    return root


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
                    batch[0].to(device, non_blocking=True)
                    seen += len(batch[1])
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


def close(a: float, b: float, rtol: float = 1e-4) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def check_statistics(released: dict, ours: ChannelStatistics, batch_size: int) -> dict:
    """Released ``A · B`` = ours; normalised values and masks equal (up to the ε of the
    normalisation, which sees sums ``B`` times smaller in the release)."""
    worst_sum = worst_norm = 0.0
    mismatches = borderline = 0
    for name, rel in released.items():
        a = ours.sums[name]
        worst_sum = max(worst_sum, float((rel["sum"].double() * batch_size - a).abs().max()
                                         / a.abs().max().clamp(min=1e-30)))
        norm = ours.normalized(name)
        worst_norm = max(worst_norm, float((rel["normalized"].double() - norm).abs().max()))
        differ = rel["mask"] != ours.mask(name)
        near = (norm - ours.theta).abs() < 1e-3
        mismatches += int((differ & ~near).sum())
        borderline += int((differ & near).sum())
    ok = worst_sum < 1e-4 and worst_norm < 1e-2 and mismatches == 0
    return {"ok": ok, "layers": len(released), "sum_rel_err": worst_sum,
            "normalized_abs_err": worst_norm, "mask_mismatches": mismatches,
            "mask_borderline": borderline}


def check_losses(model, args, device, batch, stats, layer) -> dict:
    """Ours (relu, second term masked, J=1, δ=0) = released × B for the channel loss; the
    spatial losses equal when the mask is resized alike (area)."""
    name = models.load_modules(model, [layer])[0][0]
    ours = DoctorLoss(model, stats, [layer], [layer], alpha=1.0, beta=1.0, grad_mode="relu",
                      second_term="mask", expand_px=0, num_classes=args.num_classes)
    rel = ReleasedGradConstraint(model, layer, stats.mask(name), 1.0, 1.0, resize="area")
    try:
        model.eval()
        images, labels = batch[0], batch[1]
        logits = model(images)
        _, t_ours = ours(batch, images, labels, logits)
        _, t_rel = rel(batch, images, labels, logits)
    finally:
        ours.remove()
        rel.remove()
    b = len(labels)
    out = {"channel_ours": t_ours["channel"], "channel_released_x_B": t_rel["channel"] * b,
           "spatial_ours": t_ours["spatial"], "spatial_released": t_rel["spatial"]}
    out["ok"] = close(out["channel_ours"], out["channel_released_x_B"]) and \
        close(out["spatial_ours"], out["spatial_released"])
    return out


def bench_released(args, device) -> dict:
    """The released computation ÷ ours, diagnosis and treatment, after equality checks."""
    name = args.released_model or args.diag_model
    print(f"[released] {name}", flush=True)
    model = build(name, args, device).eval()
    layers = None if args.released_layers == "all" else csv(args.released_layers)
    names = [n for n, _ in models.load_modules(model, layers)]
    data = list(SyntheticImages(args.released_images, args.diag_batch_size, args.in_channels,
                                args.image_size, args.num_classes, device, args.seed))

    def ours_diag():          # as core/grad_calculate.py: parameters frozen
        frozen(model)
        return compute_statistics(model, data, names, args.num_classes, device, 1, 0.0,
                                  "relu", 0.2, progress=False)

    def released_diag():      # as released: parameters left trainable
        frozen(model, False)
        return released_statistics(model, data, args.num_classes, device, names, 0.2)

    sizes = {len(b[1]) for b in data}      # the release's sums are ours / B: one B needed
    stats_check = check_statistics(released_diag(), ours_diag(), sizes.pop()) \
        if len(sizes) == 1 else {"ok": None, "note": "batches of different sizes"}
    diag_times = interleaved({"released": released_diag, "ours": ours_diag}, args.reps,
                             args.warmup, device)
    diag_mem = {"released": peak_memory(released_diag, device),
                "ours": peak_memory(ours_diag, device)}
    if device.type == "cuda":   # the release keeps its per-image maps in host memory
        diag_mem["released_host"] = host_peak_memory(released_diag)
        diag_mem["ours_host"] = host_peak_memory(ours_diag)
    frozen(model, False)

    # treatment: last conv, channel + spatial, same batch; ours at the released scale
    batch = synthetic_batch(args.batch_size, args.in_channels, args.image_size,
                            args.num_classes, device, args.seed)
    stats = random_statistics(model, [0], args.num_classes, args.seed)
    loss_check = check_losses(model, args, device, batch, stats, 0)
    ours_m, rel_m = copy.deepcopy(model), copy.deepcopy(model)
    layer0 = models.load_modules(model, [0])[0][0]
    ours_loss = DoctorLoss(ours_m, stats, [0], [0], alpha=args.released_alpha / args.batch_size,
                           beta=args.beta, grad_mode="relu", second_term="mask",
                           num_classes=args.num_classes)
    rel_loss = ReleasedGradConstraint(rel_m, 0, stats.mask(layer0), args.released_alpha,
                                      args.beta)
    try:
        cases = {"released": step_fn(rel_m, batch, device, args.num_classes, rel_loss),
                 "ours": step_fn(ours_m, batch, device, args.num_classes, ours_loss)}
        treat_times = interleaved(cases, args.reps, args.warmup, device)
        treat_mem = {k: peak_memory(fn, device) for k, fn in cases.items()}
    finally:
        ours_loss.remove()
        rel_loss.remove()
    return {
        "model": name, "images": args.released_images, "layers": len(names),
        "batch_size": args.diag_batch_size, "treat_batch_size": args.batch_size,
        "checks": {"statistics": stats_check, "losses": loss_check},
        "diagnosis": {"times": diag_times, "memory": diag_mem,
                      "speedup": ratio(diag_times["released"], diag_times["ours"]),
                      "memory_ratio": diag_mem["released"] / max(diag_mem["ours"], 1)},
        "treatment": {"times": treat_times, "memory": treat_mem,
                      "speedup": ratio(treat_times["released"], treat_times["ours"]),
                      "memory_ratio": treat_mem["released"] / max(treat_mem["ours"], 1)},
    }


def bench_quickstart(args) -> dict:
    print("[quickstart] fast=0 bash scripts/quickstart.sh", flush=True)
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, fast="0", result_path=f"{tmp}/output", table_dir=f"{tmp}/table",
                   PYTHON=sys.executable)
        start = time.perf_counter()
        proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=repo, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
    out = {"seconds": seconds, "returncode": proc.returncode}
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


# -- report ---------------------------------------------------------------------------------
def fmt(r: dict) -> str:
    return f"{r['median']:.2f} [{r['q25']:.2f}, {r['q75']:.2f}]"


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f}"


def write_report(results: dict, args, out_dir: Path) -> Path:
    env = results["environment"]
    intro = ["# Benchmarks", "",
             f"`{env['command']}` — {env['device']}, torch {env['torch']}, "
             f"{env['threads']} threads, {env['cpus']} CPUs, {env['date']}.", "",
             f"Ratios: median of {args.reps} interleaved repetitions, [interquartile range] "
             "of the per-repetition ratios. Memory: peak tensor memory of the call "
             f"({env['memory_method']}; see the script's docstring).", ""]
    headline: list[str] = []
    lines: list[str] = []
    t = results.get("treatment")
    if t:
        lines += ["## Treatment step ÷ plain training step", "",
                  f"Batch {args.batch_size}, {args.image_size} px, {args.in_channels} channels; "
                  f"channel + spatial constraint on the last conv (alpha {args.alpha}, "
                  f"beta {args.beta}, masks given); forward, CE, constraint, backward, SGD step "
                  "through `train.train_one_epoch`.", "",
                  "| model | layer | feature [K, H, W] | plain step ms | treatment ÷ plain | "
                  f"J={args.noise_draws}, δ={args.noise_delta:g} ÷ plain | "
                  "memory treatment ÷ plain |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in t.items():
            lines.append(f"| {name} | `{r['layer']}` | {r['feature']} | {r['plain_ms']:.1f} | "
                         f"{fmt(r['treat'])} | {fmt(r['treat_noisy'])} | "
                         f"{r['memory_ratio']:.2f} |")
        lines.append("")
    d = results.get("depth")
    if d:
        lines += ["## Treatment ÷ plain vs constrained layer", "",
                  "| model | layer (from last) | module | feature [K, H, W] | treatment ÷ plain |",
                  "|---|---|---|---|---|"]
        for name, r in d.items():
            for layer, lr in r["layers"].items():
                lines.append(f"| {name} | {layer} | `{lr['name']}` | {lr['feature']} | "
                             f"{fmt(lr['treat'])} |")
        lines.append("")
    g = results.get("diagnosis")
    if g:
        lines += ["## Diagnosis with J noise draws ÷ noiseless diagnosis", "",
                  f"`compute_statistics` on {g['images']} images ({args.image_size} px), "
                  f"{g['model']} layer `{g['layer']}`, batch {g['batch_size']}, |·| "
                  f"(noiseless: {g['base_s']:.2f} s). Memory: one batch.", "",
                  "| setting | time ÷ noiseless | memory ÷ noiseless |", "|---|---|---|"]
        for k, r in g["ratios"].items():
            lines.append(f"| {k} | {fmt(r['time'])} | {r['memory']:.2f} |")
        lines.append("")
    m = results.get("memory")
    if m:
        n0, n1 = m["images"]
        lines += ["## Diagnosis memory vs number of images", "",
                  f"{m['model']} layer `{m['layer']}`, J={m['noise_draws']}, "
                  f"batch {m['batch_size']}, synthetic images made batch by batch.", "",
                  "| images | peak MiB |", "|---|---|"]
        lines += [f"| {n} | {mib(p)} |" for n, p in m["peaks"].items()]
        lines += ["", f"Peak at {n1} ÷ peak at {n0} images: **{m['ratio']:.2f}** "
                  f"(target ≤ 1.2: {'met' if m['ratio'] <= 1.2 else 'NOT met'}).", ""]
    lo = results.get("loader")
    if lo:
        lines += ["## Loader throughput ÷ training throughput", ""]
        if "skipped" in lo:
            lines += [f"Skipped: {lo['skipped']}", ""]
        else:
            r = lo["ratio"]
            lines += [f"`build_dataset({lo['data']!r}, train transform)` + `make_loader` "
                      f"({lo['workers']} workers, batch {lo['batch_size']}, "
                      f"{lo['images']['loader']} images per pass) vs training steps of "
                      f"{lo['model']} (the fastest model measured) at the same batch size.", "",
                      "| loader images/s | training images/s | loader ÷ training |",
                      "|---|---|---|",
                      f"| {lo['loader_images_per_s']:.0f} | {lo['train_images_per_s']:.0f} | "
                      f"{fmt(r)} |", "",
                      f"Goal: loading ≥ 5× faster than training: "
                      f"{'met' if r['median'] >= 5 else 'NOT met'}.", ""]
    dp = results.get("data_paths")
    if dp:
        lines += ["## In-memory data path vs per-image path vs training", "",
                  "Loader passes over synthetic folders (`loaders.make_loader`, no workers, "
                  "shuffled, the whole training augmentation: crop with padding 4, horizontal "
                  "flip, normalisation) and `smallcnn` training steps (forward, backward, SGD "
                  "step) at the same batch, interleaved in one process. In-memory: "
                  "`--data_mode memory` (decoded once, whole-batch augmentation); per-image: "
                  "`--data_mode folder`.", "",
                  "| data | batch | in-memory images/s | per-image images/s | smallcnn training "
                  "images/s | in-memory ÷ training | per-image ÷ training | in-memory ÷ "
                  "per-image | first decode s | cache load s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in dp.items():
            lines.append(f"| {name} ({r['size']} px, {r['channels']} ch) | {r['batch_size']} | "
                         f"{r['memory_images_per_s']:.0f} | {r['folder_images_per_s']:.0f} | "
                         f"{r['train_images_per_s']:.0f} | {fmt(r['memory_vs_train'])} | "
                         f"{fmt(r['folder_vs_train'])} | {fmt(r['memory_vs_folder'])} | "
                         f"{r['decode_s']:.2f} | {r['cache_load_s']:.2f} |")
        met = all(r["memory_vs_train"]["median"] >= 5 for r in dp.values())
        lines += ["", f"Goal: in-memory loading ≥ 5× smallcnn's training: "
                  f"{'met' if met else 'NOT met'}.", ""]
    rel = results.get("released")
    if rel:
        c = rel["checks"]
        s, lc = c["statistics"], c["losses"]
        dg, tr = rel["diagnosis"], rel["treatment"]
        headline = [
            f"- **Diagnosis: {dg['speedup']['median']:.1f}× faster, "
            f"{dg['memory_ratio']:.1f}× less memory** than the released implementation "
            f"({rel['model']}, {rel['images']} images, {rel['layers']} layers).",
            f"- **Treatment step: {tr['speedup']['median']:.2f}× faster, "
            f"{tr['memory_ratio']:.2f}× less memory** than the released implementation "
            f"({rel['model']}, batch {rel['treat_batch_size']}, last conv).", ""]
        lines += ["## Released implementation ÷ ours", "",
                  "`scripts/released_reference.py` re-implements the released computation "
                  "(every conv layer, per-image maps kept, one gradient call per layer with "
                  "`create_graph=True`, per-sample Python loops; treatment with three "
                  "gradient calls). Ours: `compute_statistics(J=1, δ=0, relu)` on the same "
                  "layers, `DoctorLoss(relu, second_term=mask)` at the released scale.", "",
                  "| | released ÷ ours time | released ÷ ours memory | released MiB | ours MiB |",
                  "|---|---|---|---|---|",
                  f"| diagnosis ({rel['images']} images, {rel['layers']} layers) | "
                  f"{fmt(dg['speedup'])} | {dg['memory_ratio']:.2f} | "
                  f"{mib(dg['memory']['released'])} | {mib(dg['memory']['ours'])} |",
                  f"| treatment step (batch {rel['treat_batch_size']}) | {fmt(tr['speedup'])} | "
                  f"{tr['memory_ratio']:.2f} | {mib(tr['memory']['released'])} | "
                  f"{mib(tr['memory']['ours'])} |", ""]
        if "released_host" in dg["memory"]:
            lines += [f"Host memory of the diagnosis (the release keeps its maps there): "
                      f"released {mib(dg['memory']['released_host'])} MiB, ours "
                      f"{mib(dg['memory']['ours_host'])} MiB.", ""]
        lines += ["Checks (same model, same images):", "",
                  f"- statistics: {'PASS' if s['ok'] else 'FAIL' if s['ok'] is False else 'n/a'}"
                  + (f" — released sums × B vs ours: max rel. error {s['sum_rel_err']:.1e}; "
                     f"normalised: max abs. difference {s['normalized_abs_err']:.1e}; masks: "
                     f"{s['mask_mismatches']} mismatches ({s['mask_borderline']} within 1e-3 "
                     f"of θ) over {s['layers']} layers" if "sum_rel_err" in s else ""),
                  f"- losses: {'PASS' if lc['ok'] else 'FAIL'} — channel ours "
                  f"{lc['channel_ours']:.6g} vs released × B {lc['channel_released_x_B']:.6g}; "
                  f"spatial ours {lc['spatial_ours']:.6g} vs released "
                  f"{lc['spatial_released']:.6g} (area resize)", ""]
    q = results.get("quickstart")
    if q:
        lines += ["## Quickstart", "",
                  f"`fast=0 bash scripts/quickstart.sh`: {q['seconds']:.0f} s "
                  f"(exit code {q['returncode']}).", ""]
    path = out_dir / "benchmark.md"
    path.write_text("\n".join(intro + headline + lines))
    return path


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
