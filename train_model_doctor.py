"""Treat a trained classifier with Model Doctor's constraints (paper Eq. 7; README: Method).

    L_all = L_ce + alpha · Σ_r L_ch^r + beta · Σ_r L_sp^r

Starts from ``--ori_model_path`` (``--init pretrained``, default; the released script never
loaded it), evaluates it as epoch 0, then fine-tunes with the loop of ``train.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import loaders
from loaders.replay import with_replay
from core.channel_stats import GRAD_MODES, ChannelStatistics
from core.grad_constraint import SECOND_TERMS, DoctorLoss
from core.kernels import KERNEL_RULES
from core.terms import build_terms
from core.entry import resolved_args, setup_model
from train import (build_optimizer, fit, get_args_parser as train_parser, make_loaders,
                   wrap_model)
from utils import get_device, set_seed, weights_fingerprint
from utils.cli import HelpFormatter, run_main
from utils.distributed import cleanup, init_distributed


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                parents=[train_parser(add_help=False)], conflict_handler="resolve",
                                formatter_class=HelpFormatter)
    p.add_argument("--ori_model_path", default="output/train/models/model_ori.pth",
                   help="the trained classifier to treat")
    p.add_argument("--res_model_path", default=None,
                   help="the treated model file (released; best test epoch); last.pth and "
                        "result.json go beside it (default: MODEL_DIR/model_doctor.pth)")
    p.add_argument("--model_dir", default=None,
                   help="output folder, when --res_model_path is not given "
                        "(default: output/doctor/models)")
    p.add_argument("--grad_dir", default="output/grads",
                   help="channel statistics: a folder holding channel_stats.npz, or the file")
    p.add_argument("--mask_dir", default=None,
                   help="foreground masks <class>/<stem>.png of annotated training images; "
                        "read when --beta, --gamma or --rrr_lambda > 0 (default: none)")
    p.add_argument("--alpha", type=float, default=10 / 128,
                   help="weight of the channel constraint (batch-mean scale; the released "
                        "alpha=10 at batch 128 is 0.078 here)")
    p.add_argument("--alpha_released", action="store_true",
                   help="read --alpha on the released code's scale (divided by batch size)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the spatial constraint")
    p.add_argument("--channel_layers", default="0",
                   help="comma-separated conv layers of the channel constraint")
    p.add_argument("--spatial_layers", default="0",
                   help="comma-separated conv layers of the spatial constraint")
    p.add_argument("--expand_px", type=int, default=0,
                   help="mask expansion e in input pixels (paper: 30 at 224 px)")
    p.add_argument("--grad_mode", default="abs", choices=GRAD_MODES,
                   help="gradient rectifier: abs (paper) or relu (released code)")
    p.add_argument("--second_term", default="all", choices=SECOND_TERMS,
                   help="all (paper: every channel of the second class) or mask (released)")
    p.add_argument("--noise_draws", type=int, default=1, help="J for the constraint gradients")
    p.add_argument("--noise_delta", type=float, default=0.0, help="δ for the constraint gradients")
    p.add_argument("--gamma", type=float, default=0.0,
                   help="weight of the background-kernel constraint (not in the paper): "
                        "suppress, on every training image, the gradient on the kernels whose "
                        "gradient on the annotated images falls mostly on the background")
    p.add_argument("--kernel_layers", default="-1",
                   help="comma-separated conv layers of the background-kernel constraint "
                        "(-1 = the first conv; write --kernel_layers=-1,-2 for several)")
    p.add_argument("--kernel_tau", type=float, default=0.5,
                   help="a kernel is a background kernel when this share of its gradient on "
                        "the annotated images lies on their background")
    p.add_argument("--kernel_rule", default="share", choices=KERNEL_RULES,
                   help="which kernels are background kernels: share (its background share "
                        "> --kernel_tau), excess (share minus the background's share of the "
                        "area > --kernel_tau_excess), rank (the --kernel_top fraction with the "
                        "largest positive excess)")
    p.add_argument("--kernel_tau_excess", type=float, default=0.1,
                   help="--kernel_rule excess: how far a kernel's background share must "
                        "exceed the background's share of the area")
    p.add_argument("--kernel_top", type=float, default=0.1,
                   help="--kernel_rule rank: the fraction of a layer's kernels flagged "
                        "(rounded up; only kernels with a positive excess)")
    p.add_argument("--kernel_reinit", action="store_true",
                   help="before the first epoch, re-initialise the background kernels that "
                        "--gamma suppresses (not in the paper)")
    p.add_argument("--kernel_reinit_random", action="store_true",
                   help="control for --kernel_reinit: re-initialise as many kernels, drawn at "
                        "random, instead of the background ones")
    p.add_argument("--rrr_lambda", type=float, default=0.0,
                   help="Ross et al.'s input-gradient penalty with this weight on the masked "
                        "images: a baseline with alpha = beta = gamma = 0, else added to them")
    p.add_argument("--replay_annotated", type=int, default=0,
                   help="append this many annotated images to every training batch (0: off, "
                        "the paper; they are then in about 2 %% of batches at 20 per class)")
    p.add_argument("--init", default="pretrained", choices=("pretrained", "scratch"),
                   help="start from --ori_model_path, or from random weights (released bug)")
    p.add_argument("--allow_foreign_stats", action="store_true",
                   help="use --grad_dir statistics computed for another model name, data set, "
                        "grad_mode or other weights than --ori_model_path")
    p.set_defaults(num_epochs=20)
    return p


def resolve_output(args: argparse.Namespace) -> str:
    """Set ``args.model_dir`` and ``args.res_model_path``; return the treated model's file name.

    ``--res_model_path`` names the file (released meaning), and its folder holds the run's
    other outputs; without it the model is ``--model_dir``/model_doctor.pth.
    """
    if args.res_model_path is None:
        args.model_dir = args.model_dir or "output/doctor/models"
        args.res_model_path = str(Path(args.model_dir) / "model_doctor.pth")
        return "model_doctor.pth"
    path = Path(args.res_model_path)
    if path.is_dir() or not path.suffix:
        raise ValueError(f"--res_model_path {path} must name the treated model file (e.g. "
                         f"{path / 'model_doctor.pth'}); to name its folder use --model_dir")
    if args.model_dir is not None and Path(args.model_dir).resolve() != path.parent.resolve():
        raise ValueError(f"--model_dir {args.model_dir} contradicts --res_model_path {path}; "
                         "give one of them")
    args.model_dir = str(path.parent)
    return path.name


def split_layers(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def annotated_tensors(args) -> tuple:
    """``(images, labels, masks)`` of the annotated training images with eval transforms,
    stacked (the paper's budget is a few hundred images)."""
    dataset = loaders.build_dataset(args.data_name, args.data_dir, "train", args.in_channels,
                                    train_transform=False, mask_dir=args.mask_dir)
    items = [dataset[i] for i, path in enumerate(dataset.mask_paths) if path is not None]
    return (torch.stack([it.image for it in items]), torch.tensor([it.label for it in items]),
            torch.stack([it.mask for it in items]))


def main(args: argparse.Namespace) -> dict:
    best_name = resolve_output(args)
    set_seed(args.seed, args.deterministic)
    info, device = init_distributed(get_device(args.device, args.device_index))
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
    needs = [f"--{k} > 0" for k in ("beta", "gamma", "rrr_lambda") if getattr(args, k) > 0]
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
            raise ValueError("--replay_annotated needs masks: give --mask_dir and --beta or "
                             "--gamma or --rrr_lambda > 0")
        train_loader = with_replay(train_loader, args.replay_annotated, args.seed, info.rank)
    # Hooks sit on the bare model; DDP's forward runs them. The constraint's double backward
    # needs no special DDP setting: autograd.grad(..., create_graph=True) accumulates nothing
    # into .grad, so DDP's reducer fires once, in loss.backward(), with every parameter used.
    annotated = annotated_tensors(args) if args.gamma > 0 else None
    terms = build_terms(argparse.Namespace(**{**vars(args), "alpha": alpha}), model, stats,
                        annotated)
    doctor = DoctorLoss(terms, model=model, noise_draws=args.noise_draws,
                        noise_delta=args.noise_delta)
    ddp_model = wrap_model(model, args, device, info)
    optimizer, scheduler = build_optimizer(ddp_model, args)
    try:
        with doctor:
            return fit(args, ddp_model, train_loader, test_loader, optimizer, scheduler, device,
                       best_name=best_name, extra_loss=doctor, evaluate_start=True, info=info)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main, get_args_parser())
