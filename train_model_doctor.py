"""Treat a trained classifier with Model Doctor's constraints (paper Eq. 7, METHOD §6).

    L_all = L_ce + alpha · Σ_r L_ch^r + beta · Σ_r L_sp^r

Starts from ``--ori_model_path`` (``--init pretrained``, default; the released script never
loaded it), evaluates it as epoch 0, then fine-tunes with the loop of ``train.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import loaders
from core.channel_stats import GRAD_MODES, ChannelStatistics
from core.grad_constraint import SECOND_TERMS, DoctorLoss
from train import (build_model, build_optimizer, fit, get_args_parser as train_parser,
                   make_loaders, resolve_data_args, wrap_model)
from utils import get_device, load_weights, set_seed
from utils.distributed import cleanup, init_distributed


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                parents=[train_parser(add_help=False)], conflict_handler="resolve",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ori_model_path", default="output/train/models/model_ori.pth",
                   help="the trained classifier to treat")
    p.add_argument("--res_model_path", default="output/doctor/models",
                   help="output folder of the treated model")
    p.add_argument("--model_dir", default=None, help="alias of --res_model_path")
    p.add_argument("--grad_dir", default="output/grads",
                   help="channel statistics: a folder holding channel_stats.npz, or the file")
    p.add_argument("--mask_dir", default=None,
                   help="foreground masks <class>/<stem>.png of annotated training images")
    p.add_argument("--alpha", type=float, default=10 / 128,
                   help="weight of the channel constraint (batch-mean scale; the released "
                        "alpha=10 at batch 128 is 0.078 here)")
    p.add_argument("--alpha_released", action="store_true",
                   help="read --alpha on the released code's scale (divided by batch size)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the spatial constraint")
    p.add_argument("--channel_layers", default="0", help="comma-separated conv layers")
    p.add_argument("--spatial_layers", default="0", help="comma-separated conv layers")
    p.add_argument("--expand_px", type=int, default=0,
                   help="mask expansion e in input pixels (paper: 30 at 224 px)")
    p.add_argument("--grad_mode", default="abs", choices=GRAD_MODES)
    p.add_argument("--second_term", default="all", choices=SECOND_TERMS,
                   help="all (paper: every channel of the second class) or mask (released)")
    p.add_argument("--noise_draws", type=int, default=1, help="J for the constraint gradients")
    p.add_argument("--noise_delta", type=float, default=0.0, help="δ for the constraint gradients")
    p.add_argument("--init", default="pretrained", choices=("pretrained", "scratch"),
                   help="start from --ori_model_path (default) or from random weights (released bug)")
    p.set_defaults(num_epochs=20)
    return p


def split_layers(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def load_statistics(grad_dir: str) -> ChannelStatistics:
    path = Path(grad_dir)
    return ChannelStatistics.load(path / "channel_stats.npz" if path.is_dir() else path)


def main(args: argparse.Namespace) -> dict:
    args.model_dir = args.model_dir or args.res_model_path
    set_seed(args.seed, args.deterministic)
    info, device = init_distributed(get_device(args.device, args.device_index))
    spec, _ = resolve_data_args(args)
    batch_size = args.batch_size or spec.batch_size
    model = build_model(args, spec)
    if args.init == "pretrained":
        if not Path(args.ori_model_path).is_file():
            raise FileNotFoundError(f"--ori_model_path {args.ori_model_path} not found: train "
                                    f"the classifier first (train.py) or pass --init scratch")
        load_weights(model, args.ori_model_path, args.model_name)
    model.to(device)
    alpha = args.alpha / batch_size if args.alpha_released else args.alpha
    stats = load_statistics(args.grad_dir) if alpha > 0 else None
    use_masks = args.beta > 0
    if use_masks and not args.mask_dir:
        raise ValueError("--beta > 0 needs --mask_dir (or set --beta 0)")
    train_set = loaders.build_dataset(args.data_name, args.data_dir, "train", args.in_channels,
                                      mask_dir=args.mask_dir if use_masks else None,
                                      data_mode=args.data_mode)
    test_set = loaders.build_dataset(args.data_name, args.data_dir, "test", args.in_channels,
                                     data_mode=args.data_mode)
    if use_masks and info.is_main:
        print(f"{train_set.num_annotated} of {len(train_set)} training images have masks")
    train_loader, test_loader = make_loaders(args, train_set, test_set, batch_size, device, info)
    # Hooks sit on the bare model; DDP's forward runs them. The constraint's double backward
    # needs no special DDP setting: autograd.grad(..., create_graph=True) accumulates nothing
    # into .grad, so DDP's reducer fires once, in loss.backward(), with every parameter used.
    doctor = DoctorLoss(model, stats, split_layers(args.channel_layers),
                        split_layers(args.spatial_layers), alpha, args.beta, args.grad_mode,
                        args.second_term, args.noise_draws, args.noise_delta, args.expand_px,
                        args.num_classes)
    ddp_model = wrap_model(model, args, device, info)
    optimizer, scheduler = build_optimizer(ddp_model, args)
    try:
        return fit(args, ddp_model, train_loader, test_loader, optimizer, scheduler, device,
                   best_name="model_doctor.pth", extra_loss=doctor, evaluate_start=True,
                   info=info)
    finally:
        doctor.remove()
        cleanup()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
