"""The training engine: optimiser, epoch loop, evaluation, checkpoints and the two run
functions of the entry points (``train.py`` -> :func:`run_train`, ``test.py`` ->
:func:`run_test`; ``train_model_doctor.py`` -> :func:`core.treat.run_treatment`, which reuses
:func:`fit` with an extra loss).

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), cosine annealing over ``--num_epochs``. A run
writes the best epoch's weights (``model_ori.pth`` for train.py), ``last.pth`` (full state,
``--resume`` continues from it), ``result.json``, ``args.json``, ``epochs.jsonl`` and
TensorBoard scalars; the folder is locked while the run lasts.
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
from core.config import RunConfig, TestConfig, TrainConfig, changed_settings, finished
from core.entry import load_trained_model, resolved_args, setup_model
from core.extra_loss import ExtraLoss
from metrics import ConfusionMeter
from utils import (RunRecorder, atomic_save, atomic_write_text, get_device, load_checkpoint,
                   save_weights, set_seed, unwrap)
from utils.distributed import DistInfo, ShardSampler, all_reduce_sum, cleanup, init_distributed
from utils.run import remove_stale_tmp, run_lock

# extra_loss: an ExtraLoss (core/extra_loss.py: forward, __call__, start_epoch, remove), the
# hook through which train_model_doctor.py adds its constraints to the same loop.


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


def fit(args, cfg: RunConfig, model, train_loader, test_loader, optimizer, scheduler, device,
        best_path: Path | None = None, extra_loss: ExtraLoss | None = None,
        evaluate_start: bool = False, info: DistInfo | None = None) -> dict:
    """The epoch loop shared by ``train.py`` and ``train_model_doctor.py``.

    ``args``: ``cfg``'s flags with the resolved counts (what the records hold); ``best_path``:
    the best epoch's weights (default ``model_dir/model_ori.pth``). Each epoch reseeds all RNGs
    from ``(seed, epoch)``, so a run resumed from ``last.pth`` follows the same path as one
    that never stopped; ``--resume`` continues only a run of the same ``cfg.key()``.
    ``evaluate_start`` records the test accuracy of the starting weights as epoch 0. The run
    holds ``model_dir``'s lock and first removes what a killed run left there.
    """
    info = info or DistInfo()
    with run_lock(args.model_dir, enabled=info.is_main):
        if info.is_main:
            prepare_run_dir(Path(args.model_dir), args.log_dir)
        return _fit(args, cfg, model, train_loader, test_loader, optimizer, scheduler, device,
                    best_path, extra_loss, evaluate_start, info)


def _fit(args, cfg, model, train_loader, test_loader, optimizer, scheduler, device, best_path,
         extra_loss, evaluate_start, info) -> dict:
    is_main = info.is_main
    sampler = getattr(train_loader, "sampler", None)
    batch_sampler = getattr(train_loader, "batch_sampler", None)
    model_dir = Path(args.model_dir)
    best_path = Path(best_path or model_dir / "model_ori.pth")
    best_name = best_path.name
    key = cfg.key()
    progress = is_main and not args.no_progress
    meta = {"model_name": args.model_name, "num_classes": args.num_classes,
            "in_channels": args.in_channels, "data_name": args.data_name}
    last_path = model_dir / "last.pth"
    amp = getattr(args, "amp", "off")
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    start_epoch, best = 1, {"acc": -1.0, "epoch": -1}
    history: dict = {}
    resumed = False
    if args.resume and last_path.is_file():
        state = resume_state(last_path, best_name, cfg)
        if state["epoch"] >= args.num_epochs and finished(model_dir, cfg):
            result = json.loads((model_dir / "result.json").read_text())
            if is_main:
                print(f"{model_dir}: finished run with these settings (best top1 "
                      f"{result['best_acc']:.4f} at epoch {result['best_epoch']}); nothing to do")
            return result
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        history = state.get("history", {})
        resumed = True
        if is_main:
            print(f"resumed from {last_path} at epoch {start_epoch}")
    elif args.resume and is_main:
        print(f"--resume: no {last_path} yet, starting fresh")
    # a resumed run drops the TensorBoard steps logged after its checkpoint; a fresh one all
    recorder = RunRecorder(args.log_dir or model_dir, args, enabled=is_main,
                           purge_step=start_epoch if resumed else 0, record={"key": key})
    t0 = time.time()
    if evaluate_start and start_epoch == 1:
        meter = evaluate(model, test_loader, device, args.num_classes, progress, "epoch 0 test",
                         info, amp)
        history["epoch0_acc"] = meter.top1
        best = {"acc": meter.top1, "epoch": 0}
        if is_main:
            save_weights(model, best_path, epoch=0, acc=meter.top1, **meta)
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
                save_weights(model, best_path, epoch=epoch, acc=meter.top1, **meta)
            history["final_acc"] = meter.top1
            state = _training_state(model, optimizer, scheduler, scaler, epoch, best, args)
            state.update(history=history, best_name=best_name, key=key, config=cfg.settings())
            atomic_save(state, last_path)
            recorder.log_epoch(epoch, stats)
            print(f"epoch {epoch}/{args.num_epochs} loss {stats['train/loss']:.4f} "
                  f"train top1 {stats['train/top1']:.4f} test top1 {meter.top1:.4f} "
                  f"(best {best['acc']:.4f} @ {best['epoch']})", flush=True)
        history["final_acc"] = meter.top1
    result = {"best_acc": best["acc"], "best_epoch": best["epoch"],
              "final_acc": history.get("final_acc", best["acc"]), "epochs": args.num_epochs,
              "seconds": time.time() - t0, **{k: v for k, v in history.items() if k != "final_acc"},
              "key": key}
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


def resume_state(last_path: Path, best_name: str, cfg: RunConfig) -> dict:
    """The training state in ``last_path``, if it is one of a run with ``cfg``'s settings;
    else a ValueError of one line naming what differs and how to start fresh."""
    fresh = f"to start fresh, use another --model_dir or delete {last_path.parent}"
    state = load_checkpoint(last_path)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch"} <= set(state):
        raise ValueError(f"--resume: {last_path} is not a training state (weights only?); "
                         f"{fresh}")
    if state.get("best_name", best_name) != best_name:   # e.g. the released layout,
        raise ValueError(                                 # where both runs share models/
            f"--resume: {last_path} is the state of the run that writes "
            f"{state['best_name']}, not {best_name}; give this run its own folder")
    if state.get("key") != cfg.key():
        changes = (changed_settings(state["config"], cfg) if isinstance(state.get("config"), dict)
                   else ["it records no settings"])
        raise ValueError(f"--resume: {last_path} was trained with other settings "
                         f"({'; '.join(changes)}); {fresh}")
    return state


def check_output_dirs(*named: tuple[str, str | None]) -> None:
    """Refuse, before any work, an output folder (``(flag, path)``) that is an existing file."""
    for flag, path in named:
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise NotADirectoryError(f"{flag} {path} is a file, not a folder")


def prepare_run_dir(run_dir: Path, log_dir: str | None) -> None:
    """Remove the temporary files a killed run left (the caller holds the folder's lock)."""
    for folder in {run_dir, Path(log_dir or run_dir)}:
        for path in remove_stale_tmp(folder):
            print(f"removed {path}, left by a killed run")


def run_train(cfg: TrainConfig) -> dict:
    """``train.py``: train ``cfg.model_name`` on ``cfg.data_dir`` into ``cfg.model_dir``."""
    args = cfg.namespace()
    check_output_dirs(("--model_dir", args.model_dir), ("--log_dir", args.log_dir))
    set_seed(args.seed, args.deterministic)
    info, device = init_distributed(get_device(args.device, args.device_index))
    try:
        train_set = loaders.build_dataset(args.data_name, args.data_dir, "train",
                                          args.in_channels, data_mode=args.data_mode)
        test_set = loaders.build_dataset(args.data_name, args.data_dir, "test",
                                         args.in_channels, data_mode=args.data_mode)
        setup = setup_model(args, train_set.classes, device=device, source=args.data_dir)
        args = resolved_args(args, setup)    # args.json and the checkpoints record the counts
        batch_size = args.batch_size or setup.spec.batch_size
        train_loader, test_loader = make_loaders(args, train_set, test_set, batch_size, device,
                                                 info)
        model = wrap_model(setup.model, args, device, info)
        optimizer, scheduler = build_optimizer(model, args)
        if info.is_main:
            print(f"{args.model_name} on {args.data_name}: {len(train_set)} train / "
                  f"{len(test_set)} test images, {args.num_classes} classes, device {device}, "
                  f"{info.world_size} process(es)")
        return fit(args, cfg, model, train_loader, test_loader, optimizer, scheduler, device,
                   info=info)
    finally:
        cleanup()


def test_output(cfg: TestConfig, split: str) -> Path:
    """The JSON ``test.py`` writes; refused when it would replace the model or a folder."""
    out = Path(cfg.result_path or Path(cfg.model_path).parent / f"test_{split}.json")
    if out.resolve() == Path(cfg.model_path).resolve():
        raise ValueError(f"--result_path {out} is --model_path: the results would replace the "
                         "model; name another file")
    if out.is_dir():
        raise IsADirectoryError(f"--result_path {out} is a folder; name a JSON file")
    return out


def format_report(result: dict) -> str:
    """The text ``test.py`` prints: top-1/top-5, per-class accuracy, confusion matrix."""
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


def evaluation_setup(cfg: TestConfig):
    """``(args, device, dataset, setup, loader)`` of an evaluation of ``cfg.model_path`` on
    the ``cfg.data_type`` split (evaluation transforms, dataset order)."""
    args = cfg.namespace()
    device = get_device(args.device, args.device_index)
    dataset = loaders.build_dataset(args.data_name, args.data_dir, args.data_type,
                                    args.in_channels, train_transform=False)
    setup = load_trained_model(args, dataset.classes, device)
    loader = loaders.make_loader(dataset, args.batch_size or setup.spec.batch_size, False,
                                 args.workers, device)
    return args, device, dataset, setup, loader


def run_test(cfg: TestConfig) -> dict:
    """``test.py``: evaluate ``cfg.model_path`` on the ``cfg.data_type`` split."""
    split = loaders.resolve_split(cfg.data_dir, cfg.data_type).resolve().name
    out = test_output(cfg, split)     # refused before the evaluation, not after
    args, device, dataset, setup, loader = evaluation_setup(cfg)
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
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result
