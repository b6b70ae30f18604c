"""Model Doctor's treatment run (``train_model_doctor.py``): a trained classifier fine-tuned
with the channel and spatial constraints (paper Eq. 7),

    L_all = L_ce + alpha · Σ_r L_ch^r + beta · Σ_r L_sp^r

starting from ``--ori_model_path`` (``--init pretrained``, default; the released script never
loaded it), evaluated as epoch 0, then fine-tuned with :func:`core.engine.fit`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import loaders
from core.channel_stats import ChannelStatistics
from core.config import DoctorConfig
from core.engine import build_optimizer, check_output_dirs, fit, make_loaders, wrap_model
from core.entry import resolved_args, setup_model
from core.grad_constraint import DoctorLoss
from core.terms import build_terms
from loaders.replay import with_replay
from utils import get_device, load_checkpoint, set_seed, weights_fingerprint
from utils.distributed import cleanup, init_distributed


def holds_other_run(folder: Path, model_name: str) -> bool:
    """Whether ``folder`` holds the records of a run that does not write ``model_name``
    (e.g. the released layout: ``models/`` of train.py, with its model_ori.pth)."""
    args_json = folder / "args.json"
    if args_json.is_file():
        try:
            recorded = json.loads(args_json.read_text()).get("res_model_path")
        except (ValueError, AttributeError):
            return True
        return recorded is None or Path(recorded).name != model_name
    if (folder / "last.pth").is_file():
        try:
            state = load_checkpoint(folder / "last.pth")
        except ValueError:
            return True
        return not isinstance(state, dict) or state.get("best_name") != model_name
    return (folder / "model_ori.pth").is_file()


def output_paths(cfg: DoctorConfig) -> tuple[Path, Path]:
    """``(records folder, treated model file)`` of a treatment run.

    ``--res_model_path`` names the file (released meaning) and its folder holds the run's
    records (last.pth, result.json, ...), unless that folder holds another run's records
    (the released ``EXP/models/``, train.py's): then they go to a subfolder named after the
    file, never over the other run's. Without it the model is ``--model_dir``/model_doctor.pth.
    """
    if cfg.res_model_path is None:
        folder = Path(cfg.model_dir or "output/doctor/models")
        return folder, folder / "model_doctor.pth"
    path = Path(cfg.res_model_path)
    if path.is_dir() or not path.suffix:
        raise ValueError(f"--res_model_path {path} must name the treated model file (e.g. "
                         f"{path / 'model_doctor.pth'}); to name its folder use --model_dir")
    if cfg.model_dir is not None and Path(cfg.model_dir).resolve() != path.parent.resolve():
        raise ValueError(f"--model_dir {cfg.model_dir} contradicts --res_model_path {path}; "
                         "give one of them")
    folder = path.parent
    if holds_other_run(folder, path.name):
        folder = folder / path.stem
    return folder, path


# the weights whose terms read the masks of the annotated images
MASK_WEIGHTS = ("beta", "gamma", "rrr_lambda", "swap_lambda")


def run_treatment(cfg: DoctorConfig) -> dict:
    """``train_model_doctor.py``: treat ``cfg.ori_model_path``; returns ``result.json``."""
    run_dir, model_path = output_paths(cfg)
    if run_dir != model_path.parent:
        print(f"{model_path.parent} holds another run's records: this run's go to {run_dir}")
    args = cfg.namespace()
    args.model_dir, args.res_model_path = str(run_dir), str(model_path)
    check_output_dirs(("--model_dir", str(run_dir)), ("--log_dir", args.log_dir))
    set_seed(args.seed, args.deterministic)
    info, device = init_distributed(get_device(args.device, args.device_index))
    try:
        return treat(cfg, args, info, device)
    finally:
        cleanup()


def treat(cfg: DoctorConfig, args, info, device) -> dict:
    """The treatment itself: model, statistics, data, constraints, then the epoch loop."""
    pretrained = args.init == "pretrained"
    if pretrained and not Path(args.ori_model_path).is_file():
        raise FileNotFoundError(f"--ori_model_path {args.ori_model_path} not found: train "
                                f"the classifier first (train.py) or pass --init scratch")
    setup = setup_model(args, loaders.dataset_classes(args.data_dir, "train"),
                        weights=args.ori_model_path if pretrained else None, device=device,
                        source=args.data_dir)
    args = resolved_args(args, setup)    # args.json and the checkpoints record the counts
    model = setup.model
    batch_size = args.batch_size or setup.spec.batch_size
    alpha = args.alpha / batch_size if args.alpha_released else args.alpha
    stats = ChannelStatistics.load(args.grad_dir) if alpha > 0 else None
    if stats is not None and not args.allow_foreign_stats:
        # with --init scratch the weights differ by design (released behaviour)
        stats.check_settings({"model_name": args.model_name, "data_name": args.data_name,
                              "grad_mode": args.grad_mode, "in_channels": args.in_channels},
                             weights_fingerprint(model) if pretrained else None,
                             escape="--allow_foreign_stats")
    needs = [f"--{k} > 0" for k in MASK_WEIGHTS if getattr(args, k) > 0]
    use_masks = bool(needs)
    if use_masks:
        loaders.require_masks(bool(args.mask_dir), needs[0])
    train_set = loaders.build_dataset(args.data_name, args.data_dir, "train", args.in_channels,
                                      mask_dir=args.mask_dir if use_masks else None,
                                      data_mode=args.data_mode)
    test_set = loaders.build_dataset(args.data_name, args.data_dir, "test", args.in_channels,
                                     data_mode=args.data_mode)
    if use_masks and info.is_main:
        print(f"{train_set.num_annotated} of {len(train_set)} training images have masks")
    train_loader, test_loader = make_loaders(args, train_set, test_set, batch_size, device, info)
    if args.replay_annotated:
        if not use_masks:
            raise ValueError("--replay_annotated needs masks: give --mask_dir and "
                             + " or ".join(f"--{k}" for k in MASK_WEIGHTS) + " > 0")
        train_loader = with_replay(train_loader, args.replay_annotated, args.seed, info.rank)
    # Hooks sit on the bare model; DDP's forward runs them. The constraint's double backward
    # needs no special DDP setting: autograd.grad(..., create_graph=True) accumulates nothing
    # into .grad, so DDP's reducer fires once, in loss.backward(), with every parameter used.
    annotated = loaders.annotated_eval_tensors(train_set, setup.spec) \
        if args.gamma > 0 or (args.swap_lambda > 0 and not args.replay_annotated) else None
    terms = build_terms(argparse.Namespace(**{**vars(args), "alpha": alpha}), model, stats,
                        annotated)
    doctor = DoctorLoss(terms, model=model, noise_draws=args.noise_draws,
                        noise_delta=args.noise_delta)
    ddp_model = wrap_model(model, args, device, info)
    optimizer, scheduler = build_optimizer(ddp_model, args)
    with doctor:
        return fit(args, cfg, ddp_model, train_loader, test_loader, optimizer, scheduler, device,
                   best_path=Path(args.res_model_path), extra_loss=doctor, evaluate_start=True,
                   info=info)
