"""The released code's computation (``scripts/released_reference.py``) against ours: the same
numbers first, then time and memory."""
from __future__ import annotations

import copy

import models
from core.channel_stats import ChannelStatistics
from core.grad_calculate import compute_statistics
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm
from scripts.bench.fixtures import (SyntheticImages, build, csv, frozen, random_statistics,
                                    step_fn, synthetic_batch)
from scripts.bench.timing import host_peak_memory, interleaved, peak_memory, ratio
from scripts.released_reference import ReleasedGradConstraint, released_statistics


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


def released_scale_loss(model, stats, layer, alpha: float, beta: float,
                        num_classes: int) -> DoctorLoss:
    """Ours as the release computes it (relu, second term masked, no expansion, J=1, δ=0):
    channel and spatial constraint at ``layer``."""
    return DoctorLoss([ChannelTerm(model, stats, [layer], alpha, grad_mode="relu",
                                   second_term="mask", num_classes=num_classes),
                       SpatialTerm(model, [layer], beta)], model=model)


def check_losses(model, args, device, batch, stats, layer) -> dict:
    """Ours (relu, second term masked, J=1, δ=0) = released × B for the channel loss; the
    spatial losses equal when the mask is resized alike (area)."""
    name = models.load_modules(model, [layer])[0][0]
    ours = released_scale_loss(model, stats, layer, 1.0, 1.0, args.num_classes)
    rel = ReleasedGradConstraint(model, layer, stats.mask(name), 1.0, 1.0, resize="area")
    try:
        model.eval()
        images, labels = batch.image, batch.label
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
    ours_loss = released_scale_loss(ours_m, stats, 0, args.released_alpha / args.batch_size,
                                    args.beta, args.num_classes)
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
