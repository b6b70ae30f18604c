"""Train a CNN classifier (paper §1): plain cross-entropy, the released recipe.

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), cosine annealing over ``--num_epochs``.
Writes ``model_ori.pth`` (best test accuracy, released behaviour), ``last.pth`` (full state,
``--resume`` continues from it), ``result.json``, ``epochs.jsonl`` and TensorBoard scalars.
``train_model_doctor.py`` reuses :func:`fit`, :func:`train_one_epoch` and :func:`evaluate`.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import loaders
from metrics import ConfusionMeter
from utils import (RunRecorder, add_device_args, atomic_save, atomic_write_text, get_device,
                   load_checkpoint, save_weights, set_seed, unwrap)
from core.entry import add_model_data_args, resolved_args, setup_model
from core.extra_loss import ExtraLoss
from utils.cli import HelpFormatter, run_main
from utils.distributed import DistInfo, ShardSampler, all_reduce_sum, cleanup, init_distributed

# extra_loss: an ExtraLoss (core/extra_loss.py: forward, __call__, start_epoch, remove), the
# hook through which train_model_doctor.py adds its constraints to the same loop.


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p)
    p.add_argument("--num_epochs", type=int, default=200, help="training epochs")
    p.add_argument("--model_dir", default="output/train/models",
                   help="output folder: model_ori.pth (best epoch), last.pth, result.json")
    p.add_argument("--data_dir", default="data/decoy_digits",
                   help="dataset root holding train/ and test/")
    p.add_argument("--log_dir", default=None,
                   help="TensorBoard scalars, args.json, epochs.jsonl (default: --model_dir)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per step "
                        "(default: 128 at 28/32 px, 32 at 96/224 px, as released)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (cosine-annealed)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--workers", type=int, default=2,
                   help="data loader worker processes (folder data mode only)")
    p.add_argument("--data_mode", default="auto", choices=loaders.DATA_MODES,
                   help="memory: decode each split once (cached beside the data) and augment "
                        "whole batches on the device (up to 64 px); folder: decode and "
                        "transform image by image; auto: memory where it applies")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds weights, shuffling, augmentation and workers")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (exact resume on GPU, slower)")
    p.add_argument("--resume", action="store_true", help="continue from model_dir/last.pth")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bars")
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"),
                   help="mixed precision: autocast forward passes (fp16 adds a gradient scaler)")
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: synchronise BatchNorm statistics across ranks")
    add_device_args(p)
    return p


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace):
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.num_epochs, 1))
    return optimizer, scheduler


def reduce_meter(meter: ConfusionMeter, info: DistInfo | None) -> ConfusionMeter:
    """Sum a meter's counts over ranks, so every rank reports the whole data set."""
    if info is None or not info.enabled:
        return meter
    flat = torch.tensor([meter.top5_hits, meter.loss_sum, meter.count], dtype=torch.float64)
    cm = torch.from_numpy(meter.cm)
    all_reduce_sum(flat, info)
    all_reduce_sum(cm, info)
    meter.top5_hits, meter.loss_sum, meter.count = flat[0].item(), flat[1].item(), int(flat[2])
    meter.cm = cm.numpy()
    return meter


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def train_one_epoch(model, loader, optimizer, device, epoch: int, num_classes: int,
                    extra_loss: ExtraLoss | None = None, progress: bool = True,
                    info: DistInfo | None = None, amp: str = "off",
                    scaler: torch.amp.GradScaler | None = None) -> dict:
    """One pass over ``loader``; returns mean loss terms and train top-1 (over all ranks).

    ``amp``: autocast dtype for the forward passes (and the constraint's gradient passes,
    which run inside the same region); ``scaler``: the fp16 gradient scaler.
    """
    model.train()
    dtype = AMP_DTYPES[amp]
    meter = ConfusionMeter(num_classes)
    sums: dict[str, float] = {}
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, disable=not progress)
    for batch in bar:
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            # the extra loss runs the forward: DoctorLoss may share it with its noisy passes
            logits = model(images) if extra_loss is None else extra_loss.forward(model, images)
            loss = F.cross_entropy(logits.float(), labels)
            terms = {"ce": loss.item()}
            if extra_loss is not None:
                extra, extra_terms = extra_loss(batch, images, labels, logits)
                loss = loss + extra
                terms.update(extra_terms)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        meter.update(logits, labels, loss.item())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    reduce_meter(meter, info)
    if info is not None and info.enabled:
        keys = sorted(sums)
        totals = all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64), info)
        sums = dict(zip(keys, totals.tolist()))
    out = {f"train/{k}": v / max(meter.count, 1) for k, v in sums.items()}
    out.update({"train/loss": meter.loss, "train/top1": meter.top1})
    return out


@torch.no_grad()
def evaluate(model, loader, device, num_classes: int, progress: bool = True,
             desc: str = "test", info: DistInfo | None = None,
             amp: str = "off") -> ConfusionMeter:
    """Top-1/top-5, loss and confusion matrix of ``model`` on ``loader`` (no autograd);
    under torchrun each rank evaluates its shard and the counts are summed."""
    model.eval()
    meter = ConfusionMeter(num_classes)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "off"):
            logits = model(images).float()
        meter.update(logits, labels, F.cross_entropy(logits, labels).item())
    return reduce_meter(meter, info)


def _training_state(model, optimizer, scheduler, scaler, epoch, best, args) -> dict:
    return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best,
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))},
            "rng": {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(
                np.random.get_state()[1].astype(np.int64)), "python": random.getstate()[1]}}


def fit(args, model, train_loader, test_loader, optimizer, scheduler, device,
        best_name: str = "model_ori.pth", extra_loss: ExtraLoss | None = None,
        evaluate_start: bool = False, info: DistInfo | None = None) -> dict:
    """The epoch loop shared by ``train.py`` and ``train_model_doctor.py``.

    Each epoch reseeds all RNGs from ``(seed, epoch)``, so a run resumed from ``last.pth``
    follows the same path as one that never stopped. ``evaluate_start`` records the test
    accuracy of the starting weights as epoch 0.
    """
    info = info or DistInfo()
    is_main = info.is_main
    sampler = getattr(train_loader, "sampler", None)
    batch_sampler = getattr(train_loader, "batch_sampler", None)
    model_dir = Path(args.model_dir)
    recorder = RunRecorder(args.log_dir or model_dir, args, enabled=is_main)
    progress = is_main and not args.no_progress
    meta = {"model_name": args.model_name, "num_classes": args.num_classes,
            "in_channels": args.in_channels, "data_name": args.data_name}
    last_path = model_dir / "last.pth"
    amp = getattr(args, "amp", "off")
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    start_epoch, best = 1, {"acc": -1.0, "epoch": -1}
    history: dict = {}
    if args.resume and last_path.is_file():
        state = load_checkpoint(last_path)
        if state.get("best_name", best_name) != best_name:   # e.g. the released layout,
            raise ValueError(                                 # where both runs share models/
                f"--resume: {last_path} is the state of the run that writes "
                f"{state['best_name']}, not {best_name}; give this run its own folder")
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        history = state.get("history", {})
        if is_main:
            print(f"resumed from {last_path} at epoch {start_epoch}")
    elif args.resume and is_main:
        print(f"--resume: no {last_path} yet, starting fresh")
    t0 = time.time()
    if evaluate_start and start_epoch == 1:
        meter = evaluate(model, test_loader, device, args.num_classes, progress, "epoch 0 test",
                         info, amp)
        history["epoch0_acc"] = meter.top1
        best = {"acc": meter.top1, "epoch": 0}
        if is_main:
            save_weights(model, model_dir / best_name, epoch=0, acc=meter.top1, **meta)
            recorder.log_epoch(0, {"test/top1": meter.top1, "test/top5": meter.top5,
                                   "test/loss": meter.loss})
            print(f"epoch 0 (start) test top1 {meter.top1:.4f}")
    for epoch in range(start_epoch, args.num_epochs + 1):
        set_seed(args.seed * 100003 + epoch)
        if train_loader.generator is not None:  # shuffling and worker seeds
            train_loader.generator.manual_seed(args.seed * 100003 + epoch)
        for s in {id(x): x for x in (sampler, batch_sampler)}.values():
            if hasattr(s, "set_epoch"):   # distributed shuffling, replayed annotations
                s.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        before = extra_loss.start_epoch(epoch) if extra_loss is not None else {}
        stats = train_one_epoch(model, train_loader, optimizer, device, epoch,
                                args.num_classes, extra_loss, progress, info, amp, scaler)
        stats.update(before)
        scheduler.step()
        meter = evaluate(model, test_loader, device, args.num_classes, progress, info=info,
                         amp=amp)
        stats.update({"test/loss": meter.loss, "test/top1": meter.top1, "test/top5": meter.top5,
                      "lr": lr, "seconds": time.time() - t0})
        if is_main:
            if meter.top1 > best["acc"]:
                best = {"acc": meter.top1, "epoch": epoch}
                save_weights(model, model_dir / best_name, epoch=epoch, acc=meter.top1, **meta)
            history["final_acc"] = meter.top1
            state = _training_state(model, optimizer, scheduler, scaler, epoch, best, args)
            state.update(history=history, best_name=best_name)
            atomic_save(state, last_path)
            recorder.log_epoch(epoch, stats)
            print(f"epoch {epoch}/{args.num_epochs} loss {stats['train/loss']:.4f} "
                  f"train top1 {stats['train/top1']:.4f} test top1 {meter.top1:.4f} "
                  f"(best {best['acc']:.4f} @ {best['epoch']})", flush=True)
        history["final_acc"] = meter.top1
    result = {"best_acc": best["acc"], "best_epoch": best["epoch"],
              "final_acc": history.get("final_acc", best["acc"]), "epochs": args.num_epochs,
              "seconds": time.time() - t0, **{k: v for k, v in history.items() if k != "final_acc"}}
    if is_main:
        atomic_write_text(model_dir / "result.json", json.dumps(result, indent=2) + "\n")
    recorder.close()
    return result


def make_loaders(args, train_set, test_set, batch_size: int, device, info: DistInfo):
    """Train/test loaders; under torchrun the train set is split by a DistributedSampler
    (``batch_size`` per rank: the effective batch is ``batch_size × world_size``) and the
    test set is sharded without padding."""
    if not info.enabled:
        return (loaders.make_loader(train_set, batch_size, True, args.workers, device, args.seed),
                loaders.make_loader(test_set, batch_size, False, args.workers, device, args.seed))
    train_sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True,
                                       seed=args.seed)
    return (loaders.make_loader(train_set, batch_size, False, args.workers, device, args.seed,
                                sampler=train_sampler),
            loaders.make_loader(test_set, batch_size, False, args.workers, device, args.seed,
                                sampler=ShardSampler(len(test_set), info)))


def wrap_model(model: torch.nn.Module, args, device, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel under torchrun (optionally with synchronised BatchNorm)."""
    if not info.enabled:
        return model
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def main(args: argparse.Namespace) -> dict:
    set_seed(args.seed, args.deterministic)
    info, device = init_distributed(get_device(args.device, args.device_index))
    train_set = loaders.build_dataset(args.data_name, args.data_dir, "train", args.in_channels,
                                      data_mode=args.data_mode)
    test_set = loaders.build_dataset(args.data_name, args.data_dir, "test", args.in_channels,
                                     data_mode=args.data_mode)
    setup = setup_model(args, train_set.classes, device=device, source=args.data_dir)
    args = resolved_args(args, setup)    # args.json and the checkpoints record the counts
    batch_size = args.batch_size or setup.spec.batch_size
    train_loader, test_loader = make_loaders(args, train_set, test_set, batch_size, device, info)
    model = wrap_model(setup.model, args, device, info)
    optimizer, scheduler = build_optimizer(model, args)
    if info.is_main:
        print(f"{args.model_name} on {args.data_name}: {len(train_set)} train / {len(test_set)} "
              f"test images, {args.num_classes} classes, device {device}, "
              f"{info.world_size} process(es)")
    try:
        return fit(args, model, train_loader, test_loader, optimizer, scheduler, device, info=info)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main, get_args_parser())
