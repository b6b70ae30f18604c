"""Ablation studies of the paper on one trained experiment: train once, vary one setting.

    python -m scripts.ablation depth       --exp_dir output/quickstart/smallcnn_decoy_digits ...
    python -m scripts.ablation annotations --exp_dir ... --settings 0,5,10,20
    python -m scripts.ablation expansion   --exp_dir ... --settings 0,1,2,4

* ``depth`` (Fig. 6): channel statistics for conv layers ``0..L`` (0 = last conv), then one
  treatment per layer with ``--channel_layers i`` (and/or ``--spatial_layers i`` for the
  ``space``/``all`` variants).
* ``annotations`` (Table 2): the spatial constraint with ``k`` annotated images per class —
  the first ``k`` low-confidence images of each class traced into labelme JSON from the
  ground-truth masks (``preprocessing/synthetic_labelme.py``), then converted to masks.
  ``k = 0`` has no masks, so it is the fine-tune control (for ``all``: the channel constraint).
* ``expansion`` (Table 3): the spatial constraint with the foreground expanded by ``e`` pixels.

The experiment folder is the one ``scripts/quickstart.sh`` (or the step scripts) leave:
``models/model_ori.pth``, ``sift/high``, ``sift/low``, ``grads/`` and ``masks/``. Every run
starts from ``model_ori.pth``; its accuracy before treatment (``epoch0_acc``) is the base of
the gains. A fine-tune control (``alpha = beta = 0``, same epochs) is run too, so a gain can
be told apart from the effect of more training. Runs go to ``exp_dir/ablation/<study>/<run>``
and are reused when their recorded arguments match; after retraining ``model_ori.pth`` pass
``--rerun`` (the reuse check does not look at the weights).

Every treatment run (and the control) is one job (``scripts/jobs.py``: ``--launcher
none|local|slurm``); a failed run stops the study after the others finish, and the next call
retries it, reusing the finished ones.

Writes ``out_dir/ablation_<study>.md`` (table), ``.png`` (gain vs setting) and ``.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import matplotlib  # noqa: E402

matplotlib.use("Agg")   # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import loaders  # noqa: E402
import models  # noqa: E402
from core import grad_calculate  # noqa: E402
from core.channel_stats import ChannelStatistics  # noqa: E402
from core.config import DoctorConfig, finished, resume_key  # noqa: E402
from core.treat import run_treatment as train_doctor  # noqa: E402
from core.visualize import save_figure  # noqa: E402
from preprocessing import labelme_to_mask, synthetic_labelme  # noqa: E402
from scripts import jobs  # noqa: E402
from scripts.dirs import ExperimentDirs  # noqa: E402
from scripts.variants import LABELS, PAPER, variant_weights  # noqa: E402
from utils import add_device_args, atomic_write_text  # noqa: E402
from utils.cli import run_main  # noqa: E402

VARIANTS = tuple(v for v in PAPER if v != "control")   # the control runs anyway

# -- runs ------------------------------------------------------------------------------------
def device_argv(args: argparse.Namespace) -> list[str]:
    index = [] if args.device_index in (None, "") else ["--device_index", str(args.device_index)]
    return ["--device", args.device, *index]


def treat(args: argparse.Namespace, run_dir: Path, alpha: float, beta: float,
          channel_layers: str = "0", spatial_layers: str = "0", mask_dir: str | None = None,
          expand_px: int | None = None, grad_dir: str | None = None) -> dict:
    """One ``train_model_doctor`` run into ``run_dir/models``; returns its ``result.json``.

    A finished run with the same arguments is reused, an unfinished one resumed."""
    model_dir = ExperimentDirs(run_dir).models
    argv = ["--model_name", args.model_name, "--data_name", args.data_name,
            "--data_dir", str(args.data_dir), "--ori_model_path", str(args.ori_model_path),
            "--model_dir", str(model_dir), "--grad_dir", str(grad_dir or args.grad_dir),
            "--alpha", str(alpha), "--beta", str(beta),
            "--channel_layers", str(channel_layers), "--spatial_layers", str(spatial_layers),
            "--expand_px", str(args.expand_px if expand_px is None else expand_px),
            "--num_epochs", str(args.num_epochs), "--lr", str(args.lr), "--seed", str(args.seed),
            "--workers", str(args.workers), *device_argv(args)]
    argv += ["--mask_dir", str(mask_dir)] if mask_dir else []
    argv += ["--batch_size", str(args.batch_size)] if args.batch_size else []
    argv += ["--no_progress"] if args.no_progress else []
    cfg = DoctorConfig.parse(argv)
    result_path = model_dir / "result.json"
    if finished(model_dir, cfg) and not args.rerun:
        print(f"reusing {result_path}")
        return json.loads(result_path.read_text())
    # an unfinished run of these settings continues; one of other settings starts afresh
    resumable = resume_key(model_dir) == cfg.key()
    cfg = cfg.replace(resume=resumable and not args.rerun)
    if (model_dir / "last.pth").is_file() and not resumable:
        print(f"{model_dir}: arguments changed since the last run; training afresh")
    print(f"== {run_dir.name}: alpha {alpha} beta {beta} channel_layers {channel_layers} "
          f"spatial_layers {spatial_layers} expand_px {cfg.expand_px}", flush=True)
    return train_doctor(cfg)


@dataclass(frozen=True)
class Treatment:
    """The settings of one :func:`treat` run: one job of the study."""
    run_dir: Path
    alpha: float
    beta: float
    channel_layers: str = "0"
    spatial_layers: str = "0"
    mask_dir: Path | None = None
    expand_px: int | None = None
    grad_dir: Path | None = None


@dataclass(frozen=True)
class Planned:
    """A table row to be: its run, and what the row says about it."""
    run: Treatment
    setting: int
    variant: str
    extra: dict = field(default_factory=dict)


def run_treatment(args: argparse.Namespace, run: Treatment) -> dict:
    """One job: the run's ``result.json``."""
    return treat(args, **{f.name: getattr(run, f.name) for f in fields(run)})


def control(args: argparse.Namespace) -> Treatment:
    """The fine-tune control: same schedule, no constraint (shared by all studies)."""
    return Treatment(Path(args.work_dir) / "control", 0.0, 0.0)


def row(setting, variant: str, result: dict, **extra) -> dict:
    base = result["epoch0_acc"]
    return {"setting": setting, "variant": variant, "epoch0_acc": base,
            "best_acc": result["best_acc"], "best_epoch": result["best_epoch"],
            "final_acc": result["final_acc"], "gain_best": result["best_acc"] - base,
            "gain_final": result["final_acc"] - base, **extra}


def _require(path: Path, what: str) -> Path:
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} not found: {path} — build the experiment first "
                                f"(scripts/quickstart.sh or the step scripts)")
    return Path(path)


# -- studies ---------------------------------------------------------------------------------
def layer_names(args: argparse.Namespace) -> list[str]:
    """Conv module names of the model, last conv first (index = ``--channel_layers`` value)."""
    spec = loaders.get_spec(args.data_name)
    classes = loaders.read_classes(loaders.resolve_split(args.data_dir, "train"))
    model = models.load_model(args.model_name, spec.in_channels, len(classes),
                              image_size=spec.size, stem=args.stem)
    return [name for name, _ in models.load_modules(model)]


def depth_statistics(args: argparse.Namespace, indices: list[int], names: list[str]) -> Path:
    """Channel statistics for every studied layer in ``work_dir/depth/grads`` (reused when
    the file holds those layers with the same settings)."""
    grad_dir = ExperimentDirs(Path(args.work_dir) / "depth").grads
    wanted = {"noise_draws": args.noise_draws, "noise_delta": args.noise_delta,
              "grad_mode": args.grad_mode, "model_path": str(args.ori_model_path),
              "data_path": str(args.high_dir)}
    stats_file = grad_dir / "channel_stats.npz"
    if stats_file.is_file() and not args.rerun:
        stats = ChannelStatistics.load(stats_file)
        if (all(names[i] in stats.layers for i in indices) and stats.theta == args.theta
                and all(str(stats.settings.get(k)) == str(v) for k, v in wanted.items())):
            print(f"reusing {stats_file}")
            return grad_dir
    argv = ["--model_name", args.model_name, "--data_name", args.data_name,
            "--model_path", str(args.ori_model_path), "--data_path", str(args.high_dir),
            "--grad_path", str(grad_dir), "--layers", ",".join(str(i) for i in indices),
            "--theta", str(args.theta), "--noise_draws", str(args.noise_draws),
            "--noise_delta", str(args.noise_delta), "--grad_mode", args.grad_mode,
            "--seed", str(args.seed), "--workers", str(args.workers), *device_argv(args)]
    argv += ["--allow_empty_classes"] if args.allow_empty_classes else []
    argv += ["--no_figures"] if args.no_figures else []
    argv += ["--no_progress"] if args.no_progress else []
    argv += ["--stem", args.stem] if args.stem else []
    grad_calculate.main(grad_calculate.get_args_parser().parse_args(argv))
    return grad_dir


def study_depth(args: argparse.Namespace) -> tuple[list[Planned], dict]:
    _require(args.high_dir, "high-confidence images (sift/high)")
    names = layer_names(args)
    indices = list(range(len(names))) if args.settings == "all" else parse_ints(args.settings)
    for i in indices:
        if not 0 <= i < len(names):
            raise ValueError(f"layer {i} out of range: {args.model_name} has {len(names)} convs")
    grad_dir = depth_statistics(args, indices, names)
    plan = []
    for variant in args.variants:
        alpha, beta = variant_weights(variant, args.alpha, args.beta)
        mask_dir = _require(args.mask_dir, "masks") if beta > 0 else None
        for i in indices:
            run = Treatment(Path(args.work_dir) / "depth" / f"{variant}_layer{i}", alpha, beta,
                            channel_layers=str(i) if alpha > 0 else args.channel_layers,
                            spatial_layers=str(i) if beta > 0 else args.spatial_layers,
                            mask_dir=mask_dir, grad_dir=grad_dir)
            plan.append(Planned(run, i, variant, {"layer": names[i],
                                                  "depth_from_input": len(names) - i}))
    return plan, {"x_label": "constrained conv layer (1 = first conv from the input)",
                  "x_key": "depth_from_input", "setting_name": "layer (0 = last conv)",
                  "extra_columns": (("layer", "module"), ("depth_from_input", "conv # from input")),
                  "title": "Fig. 6: gain vs constrained layer depth",
                  "num_convs": len(names)}


def annotate(args: argparse.Namespace, per_class: int, folder: Path) -> tuple[Path, int]:
    """Simulated annotation of the first ``per_class`` low-confidence images of each class:
    labelme JSON traced from ground-truth masks → masks. Returns ``(mask_dir, count)``."""
    json_dir, mask_dir = ExperimentDirs(folder).labelme, ExperimentDirs(folder).masks
    with contextlib.suppress(FileNotFoundError):
        for old in list(json_dir.rglob("*.json")) + list(mask_dir.rglob("*.png")):
            old.unlink()   # a folder per k, but an earlier sift may have chosen other images
    rc = synthetic_labelme.main(synthetic_labelme.get_args_parser().parse_args(
        ["--image_dir", str(args.low_dir), "--gt_mask_dir", str(args.gt_mask_dir),
         "--json_dir", str(json_dir), "--per_class", str(per_class)]))
    if rc != 0:
        raise RuntimeError(f"synthetic annotation of {args.low_dir} failed (exit {rc})")
    rc = labelme_to_mask.main(labelme_to_mask.get_args_parser().parse_args(
        ["--json_dir", str(json_dir), "--mask_dir", str(mask_dir),
         "--image_dir", str(args.low_dir)]))
    if rc != 0:
        raise RuntimeError(f"labelme → mask conversion in {json_dir} failed (exit {rc})")
    return mask_dir, len(list(mask_dir.rglob("*.png")))


def study_annotations(args: argparse.Namespace) -> tuple[list[Planned], dict]:
    _require(args.low_dir, "low-confidence images (sift/low)")
    _require(args.gt_mask_dir, "ground-truth masks of the training images")
    counts = parse_ints(args.settings)
    train_images = len(loaders.build_dataset(args.data_name, args.data_dir, "train"))
    folders = {k: Path(args.work_dir) / "annotations" / f"per_class{k}" for k in counts}
    masks = {k: annotate(args, k, folders[k]) if k > 0 else (None, 0) for k in counts}
    plan = []
    for variant in args.variants:
        alpha, beta = variant_weights(variant, args.alpha, args.beta)
        for k in counts:
            mask_dir, annotated = masks[k]
            # no masks: the spatial term is 0 for every image, so run without it
            if not annotated and alpha == 0:
                run = control(args)
            else:
                run = Treatment(folders[k] / variant, alpha, beta if annotated else 0.0,
                                args.channel_layers, args.spatial_layers, mask_dir)
            plan.append(Planned(run, k, variant, {"annotated": annotated,
                                                  "ratio": annotated / train_images}))
    return plan, {"x_label": "annotated images per class", "x_key": "setting",
                  "setting_name": "per class",
                  "extra_columns": (("annotated", "annotated images"), ("ratio", "share of train")),
                  "title": "Table 2: gain vs annotated images"}


def study_expansion(args: argparse.Namespace) -> tuple[list[Planned], dict]:
    mask_dir = _require(args.mask_dir, "masks")
    plan = []
    for variant in args.variants:
        alpha, beta = variant_weights(variant, args.alpha, args.beta)
        for e in parse_ints(args.settings):
            run = Treatment(Path(args.work_dir) / "expansion" / f"{variant}_px{e}", alpha, beta,
                            args.channel_layers, args.spatial_layers, mask_dir, expand_px=e)
            plan.append(Planned(run, e, variant))
    return plan, {"x_label": "mask expansion e (pixels)", "x_key": "setting",
                  "setting_name": "expand px", "extra_columns": (),
                  "title": "Table 3: gain vs mask expansion"}


# study -> (function, default variants, default settings, help)
STUDIES = {
    "depth": (study_depth, "channel", "all", "Fig. 6: gain vs constrained conv layer"),
    "annotations": (study_annotations, "space", "0,5,10,20",
                    "Table 2: gain vs annotated images per class"),
    "expansion": (study_expansion, "space", "0,1,2,4", "Table 3: gain vs mask expansion (px)"),
}


# -- outputs ---------------------------------------------------------------------------------
def pct(x: float, signed: bool = False) -> str:
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def format_table(study: str, rows: list[dict], info: dict, ctrl: dict | None,
                 args: argparse.Namespace) -> str:
    base = rows[0]["epoch0_acc"]
    fixed = [f"lr {args.lr}", f"seed {args.seed}"]
    if any(v in ("channel", "all") for v in args.variants):
        fixed.append(f"alpha {args.alpha}" + ("" if study == "depth" else
                                              f" at layers {args.channel_layers}"))
    if any(v in ("space", "all") for v in args.variants):
        fixed.append(f"beta {args.beta}" + ("" if study == "depth" else
                                            f" at layers {args.spatial_layers}"))
        if study != "expansion":
            fixed.append(f"expand_px {args.expand_px}")
    lines = [f"# Ablation: {study} — {info['title']}", "",
             f"{args.model_name} on {args.data_name} (`{args.exp_dir}`), {args.num_epochs} "
             f"epochs from `model_ori.pth`, {', '.join(fixed)}.", "",
             f"Original accuracy: **{pct(base)}%**."]
    if ctrl is not None:
        lines.append(f"Fine-tune control (alpha = beta = 0): best {pct(ctrl['best_acc'])}% "
                     f"({pct(ctrl['gain_best'], True)}), final {pct(ctrl['final_acc'])}% "
                     f"({pct(ctrl['gain_final'], True)}).")
    lines += ["", "Accuracies in %, gains in points over the original; *best* is the best test "
                  "epoch (the released selection), *final* the last epoch.", ""]
    head = ["variant", info["setting_name"]] + [h for _, h in info["extra_columns"]] + \
        ["best acc", "gain (best)", "final acc", "gain (final)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        extra = [f"{100 * r[k]:.1f}%" if k == "ratio" else str(r[k])
                 for k, _ in info["extra_columns"]]
        cells = [LABELS[r["variant"]], str(r["setting"])] + extra + \
            [pct(r["best_acc"]), pct(r["gain_best"], True), pct(r["final_acc"]),
             pct(r["gain_final"], True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_gains(rows: list[dict], info: dict, ctrl: dict | None, path: Path, title: str):
    """Gain (points) vs setting, one line per variant (solid: best epoch, dashed: final)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        sub = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r[info["x_key"]])
        x = [r[info["x_key"]] for r in sub]
        ax.plot(x, [100 * r["gain_best"] for r in sub], "o-", color=f"C{i}",
                label=f"{LABELS[variant]} (best epoch)")
        ax.plot(x, [100 * r["gain_final"] for r in sub], "s--", color=f"C{i}", alpha=0.6,
                label=f"{LABELS[variant]} (final epoch)")
    ax.axhline(0, color="k", lw=0.8)
    if ctrl is not None:
        ax.axhline(100 * ctrl["gain_final"], color="gray", ls=":",
                   label="fine-tune control (final)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(info["x_label"])
    ax.set_ylabel("accuracy gain (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


# -- command line ----------------------------------------------------------------------------
def parse_ints(text: str) -> list[int]:
    return [int(t) for t in str(text).split(",") if t.strip()]


def get_args_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    common = argparse.ArgumentParser(add_help=False, formatter_class=fmt)
    common.add_argument("--exp_dir", required=True,
                        help="experiment folder: models/model_ori.pth, sift/, grads/, masks/")
    common.add_argument("--model_name", default="smallcnn", choices=sorted(models.MODELS))
    common.add_argument("--data_name", default="decoy_digits", choices=sorted(loaders.DATASETS))
    common.add_argument("--data_dir", default="data/decoy_digits")
    common.add_argument("--stem", default=None, choices=models.STEMS)
    common.add_argument("--settings", default=None,
                        help="comma-separated values to sweep (default per study: depth all "
                             "layers, annotations 0,5,10,20, expansion 0,1,2,4)")
    common.add_argument("--variants", default=None,
                        help=f"comma-separated of {VARIANTS} (default: depth channel, "
                             f"others space)")
    common.add_argument("--num_epochs", type=int, default=4)
    common.add_argument("--lr", type=float, default=0.05)
    common.add_argument("--batch_size", type=int, default=None)
    common.add_argument("--alpha", type=float, default=0.078, help="channel constraint weight")
    common.add_argument("--beta", type=float, default=1.0, help="spatial constraint weight")
    common.add_argument("--expand_px", type=int, default=2,
                        help="mask expansion when it is not the swept setting")
    common.add_argument("--channel_layers", default="0",
                        help="channel layers when depth is not the swept setting")
    common.add_argument("--spatial_layers", default="0",
                        help="spatial layers when depth is not the swept setting")
    common.add_argument("--noise_draws", type=int, default=10, help="J for the depth statistics")
    common.add_argument("--noise_delta", type=float, default=0.1,
                        help="δ for the depth statistics")
    common.add_argument("--theta", type=float, default=0.2, help="mask threshold θ")
    common.add_argument("--grad_mode", default="abs", choices=("abs", "relu"),
                        help="for the depth statistics")
    common.add_argument("--allow_empty_classes", action="store_true",
                        help="depth statistics: accept classes without sifted images")
    common.add_argument("--no_figures", action="store_true",
                        help="depth statistics: skip the per-layer heat maps")
    common.add_argument("--ori_model_path", default=None, help="default: EXP/models/model_ori.pth")
    common.add_argument("--grad_dir", default=None, help="default: EXP/grads")
    common.add_argument("--mask_dir", default=None, help="default: EXP/masks")
    common.add_argument("--high_dir", default=None, help="default: EXP/sift/high")
    common.add_argument("--low_dir", default=None, help="default: EXP/sift/low")
    common.add_argument("--gt_mask_dir", default=None,
                        help="ground-truth masks for the simulated annotation "
                             "(default: DATA_DIR/masks/train)")
    common.add_argument("--work_dir", default=None, help="runs go here (default: EXP/ablation)")
    common.add_argument("--out_dir", default="results", help="table and plot go here")
    common.add_argument("--no_control", action="store_true", help="skip the fine-tune control")
    common.add_argument("--rerun", action="store_true", help="redo runs that could be reused")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--workers", type=int, default=0)
    common.add_argument("--no_progress", action="store_true")
    add_device_args(common)
    jobs.add_launcher_args(common)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="study", required=True)
    for name, (_, _, _, text) in STUDIES.items():
        sub.add_parser(name, parents=[common], formatter_class=fmt, help=text, description=text)
    return p


def resolve_paths(args: argparse.Namespace) -> argparse.Namespace:
    exp = ExperimentDirs(args.exp_dir)
    _, variant, settings, _ = STUDIES[args.study]
    args.variants = [v.strip() for v in (args.variants or variant).split(",") if v.strip()]
    for v in args.variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
    if args.study != "depth" and "channel" in args.variants:
        raise ValueError(f"{args.study} varies the spatial constraint: use --variants space or all")
    args.settings = args.settings or settings
    args.ori_model_path = args.ori_model_path or exp.model_ori
    args.grad_dir = args.grad_dir or exp.grads
    args.mask_dir = args.mask_dir or exp.masks
    args.high_dir = args.high_dir or exp.high
    args.low_dir = args.low_dir or exp.low
    args.gt_mask_dir = args.gt_mask_dir or Path(args.data_dir) / "masks" / "train"
    args.work_dir = Path(args.work_dir or exp.ablation)
    return args


def main(args: argparse.Namespace) -> list[dict]:
    args = resolve_paths(args)
    _require(args.ori_model_path, "trained classifier")
    study = STUDIES[args.study][0]
    plan, info = study(args)
    runs = [p.run for p in plan] + ([] if args.no_control else [control(args)])
    work = Path(args.work_dir)
    tasks = {str(run.run_dir.relative_to(work)): (args, run) for run in runs}
    print(f"{len(tasks)} treatment run(s): {jobs.describe(args)}", flush=True)
    outcomes = jobs.run_jobs(run_treatment, tasks, args, args.job_dir or work / "jobs",
                             lambda msg: print(msg, flush=True), catch=())
    failed = [name for name, out in outcomes.items() if not out.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun to retry "
                           f"them (finished runs are reused)")
    result = {run.run_dir: outcomes[name].result for name, (_, run) in tasks.items()}
    # "run": the run folder under work_dir, where its per-epoch record is (scripts/claims.py)
    rows = [row(p.setting, p.variant, result[p.run.run_dir],
                run=str(p.run.run_dir.relative_to(work)), **p.extra) for p in plan]
    ctrl = None if args.no_control else \
        row("control", "control", result[control(args).run_dir], run="control")
    table = format_table(args.study, rows, info, ctrl, args)
    out = Path(args.out_dir)
    atomic_write_text(out / f"ablation_{args.study}.md", table)
    plot_gains(rows, info, ctrl, out / f"ablation_{args.study}.png",
               f"{info['title']} — {args.model_name}, {args.data_name} "
               f"(original {pct(rows[0]['epoch0_acc'])}%)")
    atomic_write_text(out / f"ablation_{args.study}.json", json.dumps(
        {"study": args.study, "rows": rows, "control": ctrl,
         "args": {k: str(v) for k, v in vars(args).items()}}, indent=2) + "\n")
    print("\n" + table)
    print(f"wrote {out / f'ablation_{args.study}'}.md/.png/.json")
    return rows


if __name__ == "__main__":
    run_main(main, get_args_parser())
