"""Diagnosis: channel statistics of the sifted high-confidence images (README: Method).

    python core/grad_calculate.py --model_name resnet34 --data_name decoy_digits \
        --model_path output/train/models/model_ori.pth --data_path output/sift/high \
        --grad_path output/grads

Writes ``grad_path/channel_stats.npz`` (all layers, raw sums, counts, normalised values,
masks and settings: the record every later step reads) and a class × kernel heat map per
layer ``heatmap_layer_{i}.png`` (``i`` = index from the last conv; PNG + TensorBoard).
"""
from __future__ import annotations

import argparse
from pathlib import Path

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import loaders  # noqa: E402
from utils.cli import HelpFormatter, run_main  # noqa: E402
from utils.io import refuse_overlap  # noqa: E402
import models  # noqa: E402
from core.entry import add_model_data_args, load_trained_model, resolved_args  # noqa: E402
from core.channel_stats import GRAD_MODES, ChannelStatistics, channel_gradients  # noqa: E402
from utils import (RunRecorder, add_device_args, get_device, set_seed,  # noqa: E402
                   weights_fingerprint)
from utils.distributed import (DistInfo, ShardSampler, all_reduce_sum, cleanup,  # noqa: E402
                               init_distributed)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--data_path", default="output/sift/high",
                   help="sifted high-confidence images, <class>/<file> layout")
    p.add_argument("--grad_path", default="output/grads",
                   help="output folder: channel_stats.npz, heat maps; must not overlap "
                        "--data_path")
    p.add_argument("--layers", default="0",
                   help="comma-separated conv layers (index from the last conv, or module "
                        "names), or 'all'")
    p.add_argument("--theta", type=float, default=0.2, help="mask threshold θ")
    p.add_argument("--noise_draws", type=int, default=10, help="J, noise draws per image")
    p.add_argument("--noise_delta", type=float, default=0.1, help="δ, noise U[-δ, δ]")
    p.add_argument("--grad_mode", default="abs", choices=GRAD_MODES,
                   help="gradient rectifier: abs (paper) or relu (released code)")
    p.add_argument("--batch_size", type=int, default=64, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--seed", type=int, default=0, help="seeds the noise draws")
    p.add_argument("--allow_empty_classes", action="store_true",
                   help="a class without images gets an all-ones mask instead of an error")
    p.add_argument("--no_figures", action="store_true", help="skip the heat maps")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bar")
    add_device_args(p)
    return p


def parse_layers(text: str, model: torch.nn.Module) -> list[str]:
    """``'all'`` or ``'0,2,layer4.1.conv2'`` → conv module names (last conv first)."""
    chosen = None if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    return [name for name, _ in models.load_modules(model, chosen)]


def compute_statistics(model, loader, layers, num_classes, device, noise_draws=10,
                       noise_delta=0.1, grad_mode="abs", theta=0.2, settings=None,
                       progress=True, info: DistInfo | None = None) -> ChannelStatistics:
    """Accumulate :class:`ChannelStatistics` over ``loader`` (model put in eval mode).

    Under torchrun each rank reads its shard and the per-class sums and counts are summed
    over ranks, so N ranks give the statistics of one process (exactly, with δ = 0).
    """
    model.eval()
    stats = ChannelStatistics.for_model(model, layers, num_classes, theta, settings)
    for batch in tqdm(loader, desc="channel statistics", disable=not progress):
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        grads = channel_gradients(model, images, labels, layers, noise_draws, noise_delta,
                                  grad_mode)
        stats.update(grads, labels)
    if info is not None and info.enabled:
        for name in stats.sums:
            all_reduce_sum(stats.sums[name], info)
        all_reduce_sum(stats.counts, info)
    return stats


def main(args: argparse.Namespace) -> ChannelStatistics:
    refuse_overlap(args.grad_path, {"--data_path": args.data_path}, "--grad_path")
    info, device = init_distributed(get_device(args.device, args.device_index))
    set_seed(args.seed + info.rank)     # each rank draws its own noise
    dataset = loaders.build_dataset(args.data_name, args.data_path, "train", args.in_channels,
                                    train_transform=False, allow_empty=True)
    setup = load_trained_model(args, dataset.classes, device)
    args = resolved_args(args, setup)    # the settings and args.json record the counts
    model = setup.model
    for p in model.parameters():
        p.requires_grad_(False)   # only feature-map gradients are needed
    layers = parse_layers(args.layers, model)
    sampler = ShardSampler(len(dataset), info) if info.enabled else None
    loader = loaders.make_loader(dataset, args.batch_size, False, args.workers, device,
                                 sampler=sampler)
    settings = {"model_name": args.model_name, "data_name": args.data_name,
                "in_channels": args.in_channels, "model_fingerprint": weights_fingerprint(model),
                "noise_draws": args.noise_draws, "noise_delta": args.noise_delta,
                "grad_mode": args.grad_mode, "seed": args.seed,
                "num_images": len(dataset), "data_path": str(args.data_path),
                "model_path": str(args.model_path)}
    stats = compute_statistics(model, loader, layers, args.num_classes, device,
                               args.noise_draws, args.noise_delta, args.grad_mode, args.theta,
                               settings, info.is_main and not args.no_progress, info)
    try:
        empty = stats.empty_classes()     # the same on every rank after the reduction
        if empty and not args.allow_empty_classes:
            names = [dataset.classes[c] for c in empty]
            raise ValueError(f"no images for classes {names} in {args.data_path}: sift more "
                             f"images or pass --allow_empty_classes (their masks become all ones)")
        if info.is_main:
            write_outputs(args, model, stats, layers, dataset)
    finally:
        cleanup()
    return stats


def write_outputs(args, model, stats: ChannelStatistics, layers, dataset) -> None:
    """The ``.npz`` and the heat maps."""
    out = Path(args.grad_path)
    stats.save(out / "channel_stats.npz")
    index_of = {name: i for i, (name, _) in enumerate(models.load_modules(model))}
    print(f"{len(dataset)} images, {len(layers)} layers -> {out / 'channel_stats.npz'}")
    for name in layers:
        kept = stats.mask(name).sum(dim=1)
        print(f"  {name}: {stats.layers[name]} channels, kept per class "
              f"{kept.min():.0f}..{kept.max():.0f} (mean {kept.mean():.1f})")
    if not args.no_figures:
        from core.visualize import plot_channel_heatmap
        recorder = RunRecorder(out / "runs", args)
        for name in layers:
            fig = plot_channel_heatmap(stats.normalized(name).numpy(), dataset.classes,
                                       f"{args.model_name} {name}",
                                       out / f"heatmap_layer_{index_of[name]}.png")
            recorder.add_figure(f"channel_heatmap/{name}", fig)
        recorder.close()


if __name__ == "__main__":
    run_main(main, get_args_parser())
