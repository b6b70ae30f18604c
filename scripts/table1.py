"""Reproduce Table 1 of the paper: train, diagnose and treat a grid of models x datasets x seeds.

Each cell ``(model, dataset, seed)`` runs the pipeline of ``scripts/quickstart.sh`` by calling
the bash scripts with environment variables, into ``RESULT_ROOT/<model>_<data>_s<seed>``::

    train.sh -> image_sift.sh (high) -> grad_calculate.sh -> image_sift.sh (low) -> masks ->
    train_model_doctor.sh: control (alpha=0, beta=0), channel (beta=0), space (alpha=0), all

A step is skipped when its output exists (a training step: when its folder holds a finished
run of the same settings, :func:`core.config.finished`), so an interrupted grid resumes where
it stopped (train.sh and train_model_doctor.sh also continue a half-finished run of the same
settings from ``last.pth``; a finished run of other settings is trained afresh).
Masks: a cell has them if ``<cell>/masks`` holds files (human labelme annotation of
``<cell>/sift/low``, see scripts/annotate.sh), or if the dataset has ground-truth masks
(``DATA/masks/train``), from which the annotation is simulated as in the quickstart.
+Space and +All run only with masks. A cell whose dataset is not prepared is skipped.
Each cell is one job (``scripts/jobs.py``, submitit): ``--launcher local --parallel N`` runs N
cells at once on this machine, ``--launcher slurm`` submits a Slurm job array; a failed cell is
reported, the others go on, and the next run retries it.

Then ``OUT_DIR/table1.{md,csv}`` show the paper's layout (per model "base / +All" and
"+Space / +Channel", gains in accuracy points vs base, mean +- std over seeds), a plain
fine-tune control, and the published numbers (``scripts/paper_table1.csv``) beside ours.

    python -m scripts.table1 --models vgg16 resnet50 --datasets cifar10 stl10 --seeds 0 1 2
    python -m scripts.table1 --launcher slurm --partition gpu --gpus_per_job 1 --parallel 48
    python -m scripts.table1 --report_only
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import loaders
import models
from core.config import DoctorConfig, RunConfig, TrainConfig, finished, recorded_key
from scripts import jobs
from scripts.dirs import ExperimentDirs
from scripts.variants import NEEDS_MASKS as MASKED, PAPER as VARIANTS, variant_weights

NEEDS_MASKS = tuple(v for v in VARIANTS if v in MASKED)
from utils import atomic_write_text
from utils.cli import run_main

REPO = Path(__file__).resolve().parents[1]

PAPER_NAMES = {  # registry name -> the paper's name, in the order of Table 1
    "alexnet": "AlexNet", "vgg16": "VGG-16", "resnet50": "ResNet-50", "senet34": "SENet-34",
    "wideresnet28": "WideResNet-28", "resnext50": "ResNeXt-50", "densenet121": "DenseNet-121",
    "simplenetv1": "SimpleNet-v1", "efficientnetv2s": "EfficientNetV2-S",
    "googlenet": "GoogLeNet", "xception": "Xception", "mobilenetv2": "MobileNetV2",
    "inceptionv3": "Inception-v3", "shufflenetv2": "ShuffleNetV2", "squeezenet": "SqueezeNet",
    "mnasnet": "MnasNet",
}
DATA_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
               "cifar100": "CIFAR-100", "svhn": "SVHN", "stl10": "STL-10",
               "mnin": "mini-ImageNet"}
PAPER_MODELS, PAPER_DATASETS = tuple(PAPER_NAMES), tuple(DATA_TITLES)
PAPER_CSV = REPO / "scripts" / "paper_table1.csv"
METRICS = ("final", "best", "best_treated")
DASH = "–"


def log(msg: str) -> None:
    print(f"[table1] {msg}", flush=True)


def split_names(values: list[str]) -> list[str]:
    """``["a b", "c,d"]`` -> ``["a", "b", "c", "d"]`` (flags given one quoted string each)."""
    return [n for v in values for n in re.split(r"[\s,]+", v) if n]


def has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def read_paper(path: Path = PAPER_CSV) -> dict[tuple[str, str], dict[str, float | None]]:
    """``{(model, data_name): {"base", "all", "space", "channel"}}``; None: not in the paper."""
    with open(path, newline="") as f:
        return {(r["model"], r["data_name"]):
                {k: float(r[k]) if r[k] else None for k in ("base", "all", "space", "channel")}
                for r in csv.DictReader(f)}


def prepare_hint(data_name: str, data_dir: Path) -> str:
    if data_name == "mnin":
        return (f"data_name=mnin source_dir=/path/to/mini-imagenet data_dir={data_dir} "
                f"bash scripts/prepare_data.sh")
    download = "" if data_name in ("digits", "decoy_digits") else "download=1 "
    return f"data_name={data_name} {download}data_dir={data_dir} bash scripts/prepare_data.sh"


def data_ready(data_dir: Path) -> bool:
    return (data_dir / "train").is_dir() and (data_dir / "test").is_dir()


@dataclass(frozen=True)
class Cell:
    model: str
    data: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}_{self.data}_s{self.seed}"


def CellDirs(result_root: Path, cell: Cell) -> ExperimentDirs:  # noqa: N802 (reads as a layout)
    """Where the scripts write one cell's outputs: the experiment ``RESULT_ROOT/<cell>``."""
    return ExperimentDirs.of(result_root, cell.name)


class StepFailed(RuntimeError):
    pass


class Runner:
    """Runs one step unless its output exists; logs the command (only logs it in dry runs)."""

    def __init__(self, extra_env: dict[str, str], dry_run: bool):
        self.extra_env, self.dry_run = extra_env, dry_run
        self.base_env = dict(os.environ)
        self.base_env.setdefault("PYTHON", sys.executable)

    def script_env(self, script: str, env: dict[str, str]) -> dict[str, str]:
        """Global ``--extra_env KEY=VAL``, then this script's ``SCRIPT.KEY=VAL``, then the step's"""
        stem = Path(script).stem
        out = {k: v for k, v in self.extra_env.items() if "." not in k}
        out.update({k.split(".", 1)[1]: v for k, v in self.extra_env.items()
                    if k.startswith(stem + ".")})
        out.update(env)
        return out

    def step(self, cell: Cell, label: str, done: Callable[[], bool], cmd: list[str],
             env: dict[str, str] | None = None) -> None:
        if done():
            log(f"{cell.name}: skip {label} (output exists)")
            return
        env = self.script_env(cmd[-1], env) if cmd[0] == "bash" else (env or {})
        shown = [f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.join(cmd)]
        log(f"{cell.name}: run {label}: {' '.join(shown)}")
        if self.dry_run:
            return
        rc = subprocess.run(cmd, env={**self.base_env, **env}, cwd=REPO).returncode
        if rc != 0:
            raise StepFailed(f"{label} exited with status {rc}")
        if not done():
            raise StepFailed(f"{label} finished without writing its output")


def expand_px(args, data_name: str) -> int:
    """Paper: 30 px at 224 px input; scaled to the network's input size otherwise."""
    if args.expand_px is not None:
        return args.expand_px
    return round(30 * loaders.get_spec(data_name).size / 224)


def script_config(cls: type[RunConfig], env: dict[str, str]) -> RunConfig:
    """The config a step script builds from ``env`` (its variables are the flags' names; a
    variable left empty keeps the flag's default, 1 sets a switch)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    argv = []
    for name, value in env.items():
        if name not in fields or value == "":
            continue
        if fields[name].type == "bool":
            argv += [f"--{name}"] if value == "1" else []
        else:
            argv.append(f"--{name}={value}")
    return cls.parse(argv)


def run_cell(runner: Runner, args, cell: Cell) -> None:
    """The pipeline of one cell, each step skipped if done; raises StepFailed."""
    data_dir = args.data_root / cell.data
    d = CellDirs(args.result_root, cell)
    common = {"model_name": cell.model, "data_name": cell.data, "seed": str(cell.seed),
              "result_path": str(args.result_root), "exp_name": cell.name,
              "data_dir": str(data_dir)}
    model_ori = d.model_ori

    def bash(label: str, done: Callable[[], bool], script: str, **env) -> None:
        runner.step(cell, label, done, ["bash", str(REPO / "scripts" / script)],
                    {**common, **{k: str(v) for k, v in env.items()}})

    def run(label: str, script: str, cls: type[RunConfig], run_dir: Path, **env) -> None:
        """A training step, skipped when ``run_dir`` holds its finished run (same key); a
        finished run of other settings is trained afresh, not continued."""
        cfg = script_config(cls, runner.script_env(script, {
            **common, **{k: str(v) for k, v in env.items()}}))
        if recorded_key(run_dir) not in (None, cfg.key()):
            env["resume"] = 0
        bash(label, lambda: finished(run_dir, cfg), script, **env)

    run("train", "train.sh", TrainConfig, d.models, num_epochs=args.train_epochs,
        model_dir=d.models, log_dir=d.runs("train"))
    sift = {"model_path": model_ori, "data_path": data_dir}
    bash("sift high", lambda: (d.high / "sift.csv").is_file(),
         "image_sift.sh", mode="high", num_images=args.num_high, image_path=d.high, **sift)
    bash("channel statistics", lambda: (d.grads / "channel_stats.npz").is_file(),
         "grad_calculate.sh", model_path=model_ori, data_path=d.high, grad_path=d.grads)
    bash("sift low", lambda: (d.low / "sift.csv").is_file(),
         "image_sift.sh", mode="low", num_images=args.num_low, image_path=d.low, **sift)

    gt_masks = data_dir / "masks" / "train"
    masks = has_files(d.masks)
    if not masks and has_files(gt_masks):
        runner.step(cell, "simulated annotation", lambda: has_files(d.labelme), [
            runner.base_env["PYTHON"], str(REPO / "preprocessing" / "synthetic_labelme.py"),
            "--image_dir", str(d.low), "--gt_mask_dir", str(gt_masks),
            "--json_dir", str(d.labelme), "--per_class", str(args.num_low)])
        bash("masks", lambda: has_files(d.masks),
             "labelme_to_mask.sh", json_dir=d.labelme, image_dir=d.low, mask_dir=d.masks)
        masks = True
    elif not masks:
        log(f"{cell.name}: no masks in {d.masks}: +Space and +All skipped. To add them, annotate "
            f"with `image_dir={d.low} bash scripts/annotate.sh`, then "
            f"`json_dir={d.low} mask_dir={d.masks} bash scripts/labelme_to_mask.sh`, and rerun.")

    for variant in VARIANTS:
        if variant in NEEDS_MASKS and not masks:
            continue
        alpha, beta = variant_weights(variant, args.alpha, args.beta)
        out = d.variant(variant)
        run(variant, "train_model_doctor.sh", DoctorConfig, out, variant=variant, alpha=alpha,
            beta=beta, num_epochs=args.doctor_epochs, expand_px=expand_px(args, cell.data),
            ori_model_path=model_ori, grad_dir=d.grads, mask_dir=d.masks,
            res_model_path=out / "model_doctor.pth", log_dir=d.runs(variant))


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single run
    n: int


def aggregate(values: list[float]) -> Stat | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def variant_acc(d: CellDirs, variant: str, metric: str) -> float | None:
    """Test accuracy (fraction) of a treated model: final epoch, best epoch (epoch 0, the
    untreated model, included: released protocol) or best treated epoch (epochs >= 1)."""
    result = read_json(d.variant(variant) / "result.json")
    if result is None:
        return None
    if metric != "best_treated":
        return result[f"{metric}_acc"]
    log_file = d.runs(variant) / "epochs.jsonl"
    if not log_file.is_file():
        return None
    accs = [r["test/top1"] for r in map(json.loads, log_file.read_text().splitlines())
            if r.get("epoch", 0) >= 1 and "test/top1" in r]
    return max(accs) if accs else None


def collect(result_root: Path, model: str, data: str, seeds: list[int], metric: str) -> dict:
    """Over seeds, in points: base accuracy, and per variant the gain vs its seed's base."""
    base, gains, masks = [], {v: [] for v in VARIANTS}, False
    for seed in seeds:
        d = CellDirs(result_root, Cell(model, data, seed))
        train = read_json(d.models / "result.json")
        if train is None:
            continue
        base.append(100 * train["best_acc"])  # model_ori.pth, the model every variant starts from
        masks |= has_files(d.masks)
        for v in VARIANTS:
            acc = variant_acc(d, v, metric)
            if acc is not None:
                gains[v].append(100 * (acc - train["best_acc"]))
    return {"base": aggregate(base), "masks": masks,
            **{v: aggregate(vals) for v, vals in gains.items()}}


def fmt(stat: Stat | None, signed: bool, seeds: int) -> str:
    if stat is None:
        return DASH
    sign = "+" if signed else ""
    text = f"{stat.mean:{sign}.2f}" + (f" ± {stat.std:.2f}" if stat.n > 1 else "")
    return text + (f" (n={stat.n})" if stat.n < seeds else "")


def fmt_paper(value: float | None, signed: bool) -> str:
    return DASH if value is None else f"{value:{'+' if signed else ''}.2f}"


def table_rows(args, paper: dict, status: dict) -> tuple[list[list[str]], list[dict]]:
    """Paper-layout rows ``[model, row, *datasets]`` and one numeric record per (model, dataset)."""
    rows, records, n = [], [], len(args.seeds)
    for model in args.models:
        lines = {k: [] for k in ("base / +All", "+Space / +Channel", "fine-tune control",
                                 "paper: base / +All", "paper: +Space / +Channel")}
        for data in args.datasets:
            r = collect(args.result_root, model, data, args.seeds, args.metric)
            p = paper.get((model, data), dict.fromkeys(("base", "all", "space", "channel")))
            if r["base"] is None:  # nothing trained yet: say why
                ours = [status.get((model, data), DASH)] * 3
            else:
                c = {k: fmt(r[k], k != "base", n) for k in ("base", *VARIANTS)}
                if not r["masks"]:
                    c.update({v: "n/a (no masks)" for v in NEEDS_MASKS if r[v] is None})
                ours = [f"{c['base']} / {c['all']}", f"{c['space']} / {c['channel']}", c["control"]]
            for label, text in zip(lines, ours):
                lines[label].append(text)
            lines["paper: base / +All"].append(
                f"{fmt_paper(p['base'], False)} / {fmt_paper(p['all'], True)}")
            lines["paper: +Space / +Channel"].append(
                f"{fmt_paper(p['space'], True)} / {fmt_paper(p['channel'], True)}")
            keys = ("base", *VARIANTS)
            records.append({"model": model, "data_name": data,
                            "status": status.get((model, data), ""),
                            **{f"{k}_{s}": "" if r[k] is None else f"{getattr(r[k], s):.4f}"
                               for k in keys for s in ("mean", "std")},
                            **{f"{k}_n": 0 if r[k] is None else r[k].n for k in keys},
                            **{f"paper_{k}": "" if v is None else v for k, v in p.items()}})
        title = PAPER_NAMES.get(model, model)
        rows += [[title if i == 0 else "", label, *vals]
                 for i, (label, vals) in enumerate(lines.items())]
    return rows, records


def write_tables(args, status: dict) -> None:
    rows, records = table_rows(args, read_paper(), status)
    head = ["model", "row", *args.datasets]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([head, *rows])
    atomic_write_text(args.out_dir / "table1.csv", out.getvalue())
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(args.out_dir / "table1_long.csv", out.getvalue())

    titles = [DATA_TITLES.get(d, d) for d in args.datasets]
    md = ["# Table 1: base accuracy and gains of Model Doctor", "",
          f"Test top-1 accuracy (%) of the trained classifier (`model_ori.pth`, best epoch) and "
          f"gains in points vs that base after treatment (metric: `{args.metric}` — "
          f"{METRIC_HELP[args.metric]}), mean ± sample std over seeds {args.seeds} "
          f"((n=k): only k seeds done so far). Fine-tune control: same treatment epochs with "
          f"alpha = beta = 0. Paper rows: the published Table 1 (averages of three runs). "
          f"{DASH}: not run yet; n/a (no masks): no annotation for +Space/+All. "
          f"Results: `{args.result_root}`.", "",
          "| Model | | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    atomic_write_text(args.out_dir / "table1.md", "\n".join(md) + "\n")
    log(f"wrote {args.out_dir / 'table1.md'}, table1.csv and table1_long.csv")


METRIC_HELP = {
    "final": "the treated model after its last epoch",
    "best": "best test epoch including epoch 0, the untreated model, so gains are >= 0 "
            "(released protocol: selection on the test set)",
    "best_treated": "best test epoch of the treatment, epochs >= 1 (selection on the test set)",
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(PAPER_MODELS),
                   help="registry names, space or comma separated")
    p.add_argument("--datasets", nargs="+", default=list(PAPER_DATASETS),
                   help="registry names, space or comma separated")
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="one run per seed")
    p.add_argument("--result_root", type=Path, default=Path("output/table1"),
                   help="one folder per cell: <model>_<data>_s<seed>")
    p.add_argument("--data_root", type=Path, default=Path("data"),
                   help="prepared datasets: DATA_ROOT/<data_name>/{train,test}")
    p.add_argument("--out_dir", type=Path, default=Path("results"), help="table1.{md,csv} go here")
    p.add_argument("--train_epochs", type=int, default=200,
                   help="epochs of the original classifier")
    p.add_argument("--doctor_epochs", type=int, default=20,
                   help="treatment epochs of every variant (the control too)")
    p.add_argument("--num_high", type=int, default=100, help="T, high-confidence images per class")
    p.add_argument("--num_low", type=int, default=20, help="annotated images per class")
    p.add_argument("--alpha", type=float, default=0.078, help="channel constraint weight")
    p.add_argument("--beta", type=float, default=1.0, help="spatial constraint weight")
    p.add_argument("--expand_px", type=int, default=None,
                   help="mask expansion; default 30 px at 224 px input, scaled to the input size")
    p.add_argument("--metric", default="final", choices=METRICS,
                   help="accuracy of a treated model: "
                        + "; ".join(f"{k}: {v}" for k, v in METRIC_HELP.items()))
    p.add_argument("--extra_env", action="append", default=[], metavar="KEY=VAL",
                   help="forwarded to every script (e.g. workers=0, extra_args=--no_progress); "
                        "SCRIPT.KEY=VAL only to scripts/SCRIPT.sh "
                        "(e.g. grad_calculate.extra_args=...)")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--report_only", action="store_true", help="only tabulate what exists")
    jobs.add_launcher_args(p)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    args.models, args.datasets = split_names(args.models), split_names(args.datasets)
    args.seeds = [int(s) for s in split_names(args.seeds)]
    for kind, names, valid in (("model", args.models, models.MODELS),
                               ("dataset", args.datasets, loaders.DATASETS)):
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise SystemExit(f"unknown {kind} {unknown}; valid: {', '.join(sorted(valid))}")
    # the scripts cd to the repository root: hand them absolute paths
    for key in ("result_root", "data_root", "out_dir") + (("job_dir",) if args.job_dir else ()):
        setattr(args, key, getattr(args, key).resolve())
    env = {}
    for item in args.extra_env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"([A-Za-z_]\w*\.)?[A-Za-z_]\w*", key):
            raise SystemExit(f"--extra_env expects KEY=VAL or SCRIPT.KEY=VAL, got {item!r}")
        env[key] = value
    args.extra_env = env
    return args


def run_cell_job(args: argparse.Namespace, cell: Cell) -> str:
    """One cell, as a job: its own runner, so the job's environment (GPUs) reaches the scripts."""
    run_cell(Runner(args.extra_env, args.dry_run), args, cell)
    return cell.name


def main(args: argparse.Namespace) -> int:
    args = resolve_args(args)
    missing = [d for d in args.datasets if not data_ready(args.data_root / d)]
    status = {(m, d): "missing data" for m in args.models for d in missing}
    failed = []
    if not args.report_only:
        for data in missing:
            log(f"{data}: missing data: {args.data_root / data}/{{train,test}} not found; prepare "
                f"it with `{prepare_hint(data, args.data_root / data)}`. Its cells are skipped.")
        cells = [Cell(model, data, seed) for model in args.models
                 for data in args.datasets if data not in missing for seed in args.seeds]
        if args.dry_run:
            args.launcher = "none"   # printing the commands is no job
        log(f"{len(cells)} cell(s): {jobs.describe(args)}")
        outcomes = jobs.run_jobs(run_cell_job, {c.name: (args, c) for c in cells}, args,
                                 args.job_dir or args.result_root / "jobs", log,
                                 catch=(StepFailed,))
        for cell in cells:
            if not outcomes[cell.name].ok:
                failed.append(cell.name)
                status[(cell.model, cell.data)] = "failed"
    if args.dry_run:
        log("dry run: nothing ran, no table written")
        return 0
    write_tables(args, status)
    if failed:
        log(f"{len(failed)} cell(s) failed: {', '.join(failed)}; rerun to retry them "
            f"(finished steps are skipped)")
    return 1 if failed else 0

if __name__ == "__main__":
    run_main(main, get_args_parser())
