"""Measuring: wall time of interleaved repetitions and their ratios, peak tensor memory."""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # fewer profiler log lines


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
