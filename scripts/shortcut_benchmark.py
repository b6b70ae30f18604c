"""Shortcut benchmark: does a treatment cure a shortcut that the model really takes?

A decoy (``preprocessing/decoy.py``; default: a class texture painted into the background)
encodes the label in every training image and a random class in the ``val`` and ``test``
images. Per seed this trains the classifier on the decoy images and, as the reference, on the
same images without decoy; sifts the ``budget`` lowest-confidence training images per class,
"annotates" them (labelme JSON traced from the ground-truth object masks, then the labelme
converter: the paper's annotation path) and fine-tunes the decoy model for ``doctor_epochs``
with each variant:

* ``control``: plain fine-tune, same epochs, optimiser and schedule;
* ``all``: Model Doctor's +All (channel constraint from the statistics of the ``T`` most
  confident images + spatial constraint on the annotated images, last conv, paper weights);
* ``rrr_all``: Ross et al.'s input-gradient penalty with the ground-truth mask of **every**
  training image (50x the annotations);
* ``kernels``: the background-kernel constraint (``--gamma``) with the ``budget`` masks per
  class;
* ``rrr_budget``: Ross et al.'s penalty with only the ``budget`` masks per class, the
  annotated images replayed in every batch (``--replay_annotated``);
* ``kernels_reinit``: ``kernels`` whose background kernels are also re-initialised before the
  first epoch (``--kernel_reinit``);
* ``kernels_reinit_random``: its control: as many kernels re-initialised, drawn at random
  (``--kernel_reinit_random``), same constraint and the gamma chosen for ``kernels_reinit``;
* ``kernels_reinit_deep``: ``kernels_reinit`` at the ``--deep_kernel_layers`` (default the
  first two convs), with the gamma chosen for ``kernels_reinit``;
* ``swap``: counterfactual background swaps (``--swap_lambda``): the replayed annotated images
  also shown on the background of another class, same label.

Hyperparameters (``gamma`` of ``kernels``, ``lambda`` of ``rrr_all`` and ``rrr_budget``; with ``--alphas`` /
``--betas`` also ``alpha`` of ``channel`` and ``beta`` of ``space``, which ``all`` then
reuses) are chosen on the ``val`` split (held-out training images with random decoys) of the
first seed, never on the test split. Every step is skipped when its output exists, so a killed run resumes.
Writes ``results_dir/shortcut.md``, ``shortcut.json`` and ``shortcut.png``: per model the
random-decoy and decoy-free test top-1, the worst group where the test split records groups
(photo), and per treatment the share of the gap (clean-trained reference minus untreated model
on the random-decoy test), the paired difference to the control with its 95 % t-interval and
whether it meets the goal (:func:`score`); a line checks that the clean reference is a fair
yardstick (:func:`yardstick`). ``scripts/suite.py`` summarises several families.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core import grad_calculate, image_sift  # noqa: E402
from core.config import DoctorConfig, TestConfig, TrainConfig, finished  # noqa: E402
from core.diagnose import split_background_shares  # noqa: E402
from core.engine import evaluation_setup, run_test, run_train  # noqa: E402
from core.treat import run_treatment  # noqa: E402
from core.visualize import save_figure  # noqa: E402
from preprocessing import (decoy, labelme_to_mask, mnist, photo_backgrounds,  # noqa: E402
                           synthetic_labelme)
from core.counterfactual import SWAP_PARTNERS  # noqa: E402
from core.kernels import add_kernel_rule_args  # noqa: E402
from metrics.groups import worst_group_accuracy  # noqa: E402
from scripts.results import commit, write_section  # noqa: E402
from scripts.dirs import ExperimentDirs  # noqa: E402
from scripts.shortcut_score import (goal_text, points, summarize, table_lines,  # noqa: E402
                                    yardstick_line)
from scripts.variants import LABELS as VARIANT_LABELS, VARIANTS as VARIANT_TABLE  # noqa: E402
from utils import atomic_write_text  # noqa: E402
from utils.cli import run_main  # noqa: E402

VARIANTS = tuple(VARIANT_TABLE)   # names, labels and searched weights: scripts/variants.py
LABELS = {"untreated": "Untreated decoy model", **VARIANT_LABELS,
          "clean": "Clean-trained reference"}
# superseded by kernels_reinit_deep: kernels stays an option; kernels_reinit is run for the
# gamma that kernels_reinit_random and kernels_reinit_deep take from it
DEFAULT_VARIANTS = ("control", "all", "rrr_all", "rrr_budget", "kernels_reinit",
                    "kernels_reinit_random", "kernels_reinit_deep")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_name", default="smallcnn", help="network")
    p.add_argument("--base_data", default="fashion_mnist", choices=("fashion_mnist", "mnist"),
                   help="plain dataset the decoy is painted on (built from --source)")
    p.add_argument("--source", default=None,
                   help="IDX files (default data/raw/<base_data>; Fashion-MNIST: Debian's copy "
                        "is found when this holds none)")
    p.add_argument("--data_root", default="data", help="datasets are written under this folder")
    p.add_argument("--out_dir", default="output/shortcut", help="runs are written here")
    p.add_argument("--results_dir", default="results", help="table, JSON and plot")
    p.add_argument("--results_file", default=None,
                   help="also write the table as a section of this file (RESULTS.md)")
    p.add_argument("--decoy_kind", default="texture", choices=(*decoy.KINDS, "photo"),
                   help="photo: Fashion-MNIST on photographs at 64 px, the background place "
                        "correlated with the class (--correlation); its clean twin has "
                        "backgrounds independent of the class")
    p.add_argument("--correlation", type=photo_backgrounds.correlation_arg,
                   default=photo_backgrounds.DEFAULT_CORRELATION,
                   help="photo: share of training images on their class's background place")
    p.add_argument("--image_size", type=int, default=64, choices=tuple(photo_backgrounds.DATA_NAMES),
                   help="photo: image side in px (96: the large-image stand-in, ImageNet stem)")
    p.add_argument("--decoy_strength", type=int, default=decoy.TEXTURE_STRENGTH,
                   help="texture intensity (1-255)")
    p.add_argument("--train_per_class", type=int, default=1000, help="training images kept")
    p.add_argument("--val_per_class", type=int, default=100, help="held-out validation images")
    p.add_argument("--test_per_class", type=int, default=0,
                   help="test images kept per class (0: all; fewer: cheaper evaluation)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--train_epochs", type=int, default=30,
                   help="training of both classifiers (30: the converged recipe for smallcnn on "
                        "1,000 Fashion-MNIST images per class; the curve is in RESULTS.md)")
    p.add_argument("--doctor_epochs", type=int, default=4, help="every fine-tune variant")
    p.add_argument("--budget", type=int, default=20, help="annotated images per class")
    p.add_argument("--num_high", type=int, default=100, help="T images per class (statistics)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01, help="training and fine-tune learning rate")
    p.add_argument("--alpha", type=float, default=10 / 128, help="all variant: channel weight")
    p.add_argument("--beta", type=float, default=1.0, help="all variant: spatial weight")
    p.add_argument("--expand_px", type=int, default=0,
                   help="+Space/+All: foreground expansion e in input px (paper: 30 at 224 px; "
                        "the large-image stand-in scales it to the image)")
    p.add_argument("--gammas", default="0.1,0.3,1,3",
                   help="background-kernel weights searched on val (first seed)")
    p.add_argument("--kernel_layers", default="-1", help="background-kernel layers")
    p.add_argument("--deep_kernel_layers", default="-1,-2",
                   help="background-kernel layers of the kernels_reinit_deep variant")
    p.add_argument("--kernel_tau", type=float, default=0.5, help="background share threshold")
    add_kernel_rule_args(p)
    p.add_argument("--rrr_lambdas", default="0.1,0.3,1,3",
                   help="right-reasons weights (masks on all images) searched on val (first "
                        "seed)")
    p.add_argument("--rrr_budget_lambdas", default="1,3,10",
                   help="right-reasons weights (annotated images only) searched on val "
                        "(first seed)")
    p.add_argument("--swap_lambdas", default="0.3,1,3",
                   help="counterfactual-swap weights searched on val (first seed)")
    p.add_argument("--swap_partners", default="other", choices=SWAP_PARTNERS,
                   help="swap: the background of another class's image, or of any image's")
    p.add_argument("--replay", type=int, default=32,
                   help="annotated images replayed in every batch (rrr_budget, swap)")
    p.add_argument("--alphas", default="",
                   help="channel weights searched on val for +Channel (first seed); +All uses "
                        "the chosen one (default: no search, --alpha)")
    p.add_argument("--betas", default="",
                   help="spatial weights searched on val for +Space (first seed); +All uses "
                        "the chosen one (default: no search, --beta)")
    p.add_argument("--variants",
                   default=",".join(DEFAULT_VARIANTS),
                   help=f"treatments to compare, from: {', '.join(VARIANTS)}")
    p.add_argument("--table_name", default=None,
                   help="results file name (default: shortcut, or gains without a decoy)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no_verify", action="store_true",
                   help="skip the check of the plain dataset's counts against the official ones")
    return p


def quiet(fn, argv: list[str]):
    """Run an entry point's ``main`` on ``argv`` with its printing captured."""
    module = sys.modules[fn.__module__]
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(module.get_args_parser().parse_args(argv))


def quiet_run(run, cfg):
    """A library run function (``run_train``, ``run_treatment``, ``run_test``) on ``cfg`` with
    its printing captured."""
    with contextlib.redirect_stdout(io.StringIO()):
        return run(cfg)


# variant -> (its searched weight, the flag holding the grid)
SEARCHED = {name: v.searched for name, v in VARIANT_TABLE.items() if v.searched}


def search_dir(name: str, value: float) -> str:
    prefix = {"kernels": "kernels_g", "rrr_all": "rrr_l", "rrr_budget": "rrr_budget_l",
              "kernels_reinit": "kernels_reinit_g",
              "channel": "channel_a", "space": "space_b", "swap": "swap_l"}[name]
    return f"search/{prefix}{value:g}"


def floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def data_name(args) -> str:
    if args.decoy_kind == "photo":
        return photo_backgrounds.DATA_NAMES[args.image_size]
    return f"decoy_{args.base_data}"


class Benchmark:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out_dir)
        self.photo = args.decoy_kind == "photo"
        if self.photo and args.base_data != "fashion_mnist":
            raise ValueError("--decoy_kind photo: the items are Fashion-MNIST's "
                             "(--base_data fashion_mnist)")
        if args.image_size != 64 and not self.photo:
            raise ValueError("--image_size: only --decoy_kind photo has another size")
        strength = f"{args.correlation:g}" if self.photo else \
            "" if args.decoy_kind == "none" else args.decoy_strength
        size = f"_{args.image_size}px" if args.image_size != 64 else ""
        test = f"_test{args.test_per_class}" if args.test_per_class else ""
        tag = f"{args.decoy_kind}{strength}{size}_{args.train_per_class}{test}"
        root = Path(args.data_root)
        self.plain = root / args.base_data
        self.decoy_dir = root / f"shortcut_{args.base_data}_{tag}"
        clean = f"photo0{size}" if self.photo else "none"
        self.clean_dir = root / f"shortcut_{args.base_data}_{clean}_{args.train_per_class}{test}"
        self.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; valid: {', '.join(VARIANTS)}")
        for name in self.variants:   # a weight found only by the search (+Channel/+Space
            flag = SEARCHED.get(name, (None, None))[1]   # fall back to --alpha/--beta)
            if flag and name not in ("channel", "space") and not floats(getattr(args, flag)):
                raise ValueError(f"--{flag}: empty, but {name} takes its weight from the "
                                 f"search on val: give at least one value")
        for borrower in ("kernels_reinit_random", "kernels_reinit_deep"):
            if borrower in self.variants and not (
                    "kernels_reinit" in self.variants and floats(args.gammas)):
                raise ValueError(f"--variants: {borrower} takes the gamma chosen for "
                                 "kernels_reinit: list kernels_reinit too, with --gammas")
        # without a decoy (none, or photo backgrounds independent of the class: the
        # large-image stand-in) the two models coincide
        self.has_clean = not (args.decoy_kind == "none" or
                              (self.photo and args.correlation == 0))
        self.common = ["--model_name", args.model_name, "--data_name", data_name(args),
                       "--workers", str(args.workers), "--no_progress"]

    # -- data -----------------------------------------------------------------------------
    def prepare(self) -> None:
        a = self.args
        # always: it skips the files that exist and checks the counts (a killed run resumes)
        mnist.convert_mnist(a.base_data, a.source or f"data/raw/{a.base_data}", self.plain,
                            verify=not a.no_verify)
        split = dict(val_per_class=a.val_per_class, train_per_class=a.train_per_class,
                     test_per_class=a.test_per_class)
        if self.photo:
            photo_backgrounds.make_photo(self.plain, self.decoy_dir, correlation=a.correlation,
                                         size=a.image_size, **split)
            if self.has_clean:
                photo_backgrounds.make_photo(self.plain, self.clean_dir, correlation=0,
                                             size=a.image_size, **split)
            return
        decoy.make_decoy(self.plain, self.decoy_dir, kind=a.decoy_kind,
                         strength=a.decoy_strength, **split)
        decoy.make_decoy(self.plain, self.clean_dir, kind="none", **split)

    # -- steps ----------------------------------------------------------------------------
    def train(self, data_dir: Path, run: Path, seed: int) -> Path:
        """The final-epoch model (``model_ori.pth`` is the best epoch on the test split)."""
        exp = ExperimentDirs(run)
        cfg = TrainConfig.parse(self.common + [
            "--data_dir", str(data_dir), "--model_dir", str(exp.models),
            "--num_epochs", str(self.args.train_epochs), "--batch_size",
            str(self.args.batch_size), "--lr", str(self.args.lr), "--seed", str(seed),
            "--resume"])   # a killed training continues from its last epoch (same settings)
        if not finished(exp.models, cfg):
            quiet_run(run_train, cfg)
        return exp.models / "last.pth"

    def annotate(self, run: Path, model: Path) -> Path:
        """Sift low, trace labelme JSON from the ground-truth masks, convert to masks."""
        exp = ExperimentDirs(run)
        masks = exp.masks
        if masks.is_dir():
            return masks
        a = self.args
        sift = self.common + ["--model_path", str(model), "--data_path", str(self.decoy_dir)]
        quiet(image_sift.main, sift + ["--mode", "low", "--num_images", str(a.budget),
                                       "--image_path", str(exp.low)])
        quiet(synthetic_labelme.main, [
            "--image_dir", str(exp.low),
            "--gt_mask_dir", str(self.decoy_dir / "masks" / "train"),
            "--json_dir", str(exp.labelme), "--per_class", str(a.budget)])
        tmp = masks.with_name(masks.name + ".tmp")
        quiet(labelme_to_mask.main, ["--json_dir", str(exp.labelme), "--mask_dir", str(tmp),
                                     "--image_dir", str(exp.low)])
        tmp.rename(masks)
        return masks

    def statistics(self, run: Path, model: Path) -> Path:
        exp = ExperimentDirs(run)
        grads = exp.grads
        if (grads / "channel_stats.npz").is_file():
            return grads
        sift = self.common + ["--model_path", str(model), "--data_path", str(self.decoy_dir)]
        quiet(image_sift.main, sift + ["--mode", "high", "--num_images", str(self.args.num_high),
                                       "--image_path", str(exp.high)])
        quiet(grad_calculate.main, self.common + [
            "--model_path", str(model), "--data_path", str(exp.high),
            "--grad_path", str(grads), "--allow_empty_classes", "--no_figures"])
        return grads

    def treat_config(self, res: Path, model: Path, seed: int, extra: list[str]) -> DoctorConfig:
        a = self.args
        return DoctorConfig.parse(self.common + [
            "--data_dir", str(self.decoy_dir), "--ori_model_path", str(model),
            "--model_dir", str(res), "--num_epochs", str(a.doctor_epochs),
            "--batch_size", str(a.batch_size), "--lr", str(a.lr), "--seed", str(seed), *extra])

    def treat(self, run: Path, name: str, model: Path, seed: int, extra: list[str]) -> Path:
        """Fine-tune ``model`` into ``run/name``; a finished run is reused only when it had
        the settings asked for (:func:`core.config.finished`), else it is run again."""
        res = run / name
        cfg = self.treat_config(res, model, seed, extra)
        if not finished(res, cfg):
            for stale in res.glob("bench_*.json"):   # evaluations of another run
                stale.unlink()
            quiet_run(run_treatment, cfg)
        return res / "last.pth"

    def search_point(self, res: Path, model: Path, seed: int, extra: list[str]) -> float:
        """Val top-1 of one searched setting; NaN when its training diverged (recorded with the
        run's key in ``diverged.json``, so a resumed search does not train it again)."""
        marker = res / "diverged.json"
        key = self.treat_config(res, model, seed, extra).key()
        if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            return float("nan")
        try:
            m = self.treat(res.parent, res.name, model, seed, extra)
        except FloatingPointError as exc:
            atomic_write_text(marker, json.dumps({"error": str(exc), "key": key}) + "\n")
            print(f"{res.name}: diverged ({exc})", flush=True)
            return float("nan")
        return self.evaluate(m, self.decoy_dir, "val")

    def evaluate(self, model: Path, data_dir: Path, split: str) -> float:
        out = model.parent / f"bench_{data_dir.name}_{split}.json"
        if out.is_file():
            return json.loads(out.read_text())["top1"]
        result = quiet_run(run_test, TestConfig.parse(self.common + [
            "--model_path", str(model), "--data_dir", str(data_dir), "--data_type", split,
            "--result_path", str(out)]))
        return result["top1"]

    def diagnose(self, model_path: Path) -> list[float]:
        """Per class, the share of the class score's gradient at the first conv that lies on
        the background of the held-out ``val`` images (the diagnosis of the shortcut)."""
        out = model_path.parent / "bench_background_share.json"
        if out.is_file():
            return json.loads(out.read_text())
        shares = split_background_shares(self.args.model_name, model_path,
                                         data_name(self.args), self.decoy_dir, "val").tolist()
        atomic_write_text(out, json.dumps(shares) + "\n")
        return shares

    def predictions(self, model: Path, data_dir: Path, split: str) -> dict:
        """Per-image predictions of ``model`` on ``split`` (:func:`predict_split`), cached
        beside the other evaluations (a resumed run does not recompute them)."""
        out = model.parent / f"bench_{data_dir.name}_{split}_predictions.json"
        if out.is_file():
            return json.loads(out.read_text())
        cfg = TestConfig.parse(self.common + ["--model_path", str(model), "--data_dir",
                                              str(data_dir), "--data_type", split])
        result = predict_split(cfg)
        atomic_write_text(out, json.dumps(result) + "\n")
        return result

    def worst_group(self, model: Path) -> float | None:
        """Worst-group accuracy on the random-decoy test split, where the split records its
        images' groups (``groups.csv``: the photo family's (class, place agrees)); else None."""
        groups_csv = self.decoy_dir / "test" / "groups.csv"
        if not groups_csv.is_file():
            return None
        group = {r["file"]: r["group"] for r in photo_backgrounds.read_groups(groups_csv)}
        p = self.predictions(model, self.decoy_dir, "test")
        missing = [f for f in p["files"] if f not in group]
        if missing:
            raise ValueError(f"{groups_csv} has no group for {len(missing)} test image(s), "
                             f"e.g. {missing[0]}: rebuild the dataset")
        return worst_group_accuracy(p["preds"], p["labels"], [group[f] for f in p["files"]])

    def scores(self, model: Path) -> dict:
        scores = {"val": self.evaluate(model, self.decoy_dir, "val"),
                  "test": self.evaluate(model, self.decoy_dir, "test"),
                  "clean_test": self.evaluate(model, self.clean_dir, "test"),
                  "background_share": self.diagnose(model)}
        worst = self.worst_group(model)
        return scores if worst is None else {**scores, "worst_group": worst}

    def variant_args(self, name: str, masks: Path, grads: Path, value: float | None,
                     chosen: dict[str, float] | None = None) -> list[str]:
        """Flags of a treatment variant; ``value`` is its searched weight (gamma, lambda,
        alpha, beta); ``chosen`` the weights chosen on val (``all`` takes +Channel's alpha
        and +Space's beta from it when they were searched)."""
        a, chosen = self.args, chosen or {}
        zero = ["--alpha", "0", "--beta", "0"]
        weight_a = value if name == "channel" and value is not None else \
            chosen.get("channel", a.alpha)
        weight_b = value if name == "space" and value is not None else chosen.get("space", a.beta)
        alpha = ["--alpha", f"{weight_a:g}", "--grad_dir", str(grads)]

        rule = ["--kernel_tau", str(a.kernel_tau), "--kernel_rule", a.kernel_rule,
                "--kernel_tau_excess", str(a.kernel_tau_excess), "--kernel_top", str(a.kernel_top)]

        def reinit(gamma, layers=a.kernel_layers):
            return zero + ["--gamma", f"{gamma:g}", f"--kernel_layers={layers}", *rule,
                           "--mask_dir", str(masks), "--kernel_reinit"]
        beta = ["--beta", f"{weight_b:g}", "--mask_dir", str(masks),
                "--expand_px", str(a.expand_px)]
        return {
            "control": lambda: zero,
            "channel": lambda: alpha + ["--beta", "0"],
            "space": lambda: ["--alpha", "0"] + beta,
            "all": lambda: alpha + beta,
            "rrr_all": lambda: zero + ["--rrr_lambda", f"{value:g}", "--mask_dir",
                                       str(self.decoy_dir / "masks" / "train")],
            "rrr_budget": lambda: zero + ["--rrr_lambda", f"{value:g}", "--mask_dir", str(masks),
                                          "--replay_annotated", str(a.replay)],
            "kernels": lambda: zero + ["--gamma", f"{value:g}",
                                       f"--kernel_layers={a.kernel_layers}", *rule,
                                       "--mask_dir", str(masks)],
            "swap": lambda: zero + ["--swap_lambda", f"{value:g}", "--mask_dir", str(masks),
                                    "--replay_annotated", str(a.replay),
                                    "--swap_partners", a.swap_partners],
            "kernels_reinit": lambda: reinit(value),
            "kernels_reinit_random": lambda: reinit(chosen.get("kernels_reinit")) +
            ["--kernel_reinit_random"],
            "kernels_reinit_deep": lambda: reinit(chosen.get("kernels_reinit"),
                                                  a.deep_kernel_layers),
        }[name]()

    # -- the benchmark ------------------------------------------------------------------------
    def check_config(self) -> None:
        """Refuse an ``out_dir`` whose runs were made with other settings (they would be
        reused: every step is skipped when its output exists)."""
        keys = ("model_name", "base_data", "decoy_kind", "decoy_strength", "train_per_class",
                "val_per_class", "train_epochs", "doctor_epochs", "budget", "num_high",
                "batch_size", "lr", "alpha", "beta", "kernel_layers", "kernel_tau")
        keys += ("correlation",) if self.photo else ()
        # settings added later: recorded where they differ from the value every earlier
        # out_dir used, so an absent one there means that value; the kernel rule's
        # parameters go with a rule other than share (under share they play no part)
        later = {"image_size": 64, "test_per_class": 0, "expand_px": 0, "swap_partners": "other",
                 "kernel_rule": "share"}
        config = {k: getattr(self.args, k) for k in keys}
        config.update({k: getattr(self.args, k) for k, v in later.items()
                       if getattr(self.args, k) != v})
        if self.args.kernel_rule != "share":
            config.update(kernel_tau_excess=self.args.kernel_tau_excess,
                          kernel_top=self.args.kernel_top)
        path = self.out / "config.json"
        if path.is_file():
            old = json.loads(path.read_text())
            absent = {**later, "kernel_tau_excess": 0.1, "kernel_top": 0.1}   # the defaults
            compared = {k: (old.get(k, absent.get(k)), config.get(k, absent.get(k)))
                        for k in dict.fromkeys([*config, *old]) if k != "commit"}
            differ = {k: v for k, v in compared.items() if v[0] != v[1]}
            if differ:
                raise ValueError(f"{self.out} holds runs made with other settings "
                                 f"({', '.join(f'{k}: {a} there, {b} now' for k, (a, b) in differ.items())}); "
                                 f"give another --out_dir")
        else:
            # the commit the runs are measured on, for the reports (not compared on reuse)
            atomic_write_text(path, json.dumps({**config, "commit": commit()}, indent=2) + "\n")

    def run(self) -> dict:
        a = self.args
        self.check_config()
        self.prepare()
        seeds = [int(s) for s in a.seeds.split(",")]
        grids = {k: floats(getattr(a, flag)) for k, (_, flag) in SEARCHED.items()
                 if k in self.variants and floats(getattr(a, flag))}
        rows: dict[str, list[dict]] = {}
        search: dict[str, dict[float, float]] = {k: {} for k in grids}
        chosen: dict[str, float] = {}
        for i, seed in enumerate(seeds):
            t0 = time.time()
            run = self.out / f"seed{seed}"
            model = self.train(self.decoy_dir, run / "decoy", seed)
            if self.has_clean:
                rows.setdefault("clean", []).append(
                    self.scores(self.train(self.clean_dir, run / "clean", seed)))
            masks = self.annotate(run, model)
            grads = self.statistics(run, model)
            rows.setdefault("untreated", []).append(self.scores(model))
            if i == 0:   # hyperparameters on the val split of the first seed
                for name, grid in grids.items():
                    for value in grid:
                        search[name][value] = self.search_point(
                            run / search_dir(name, value), model, seed,
                            self.variant_args(name, masks, grads, value))
                    finite = {v: acc for v, acc in search[name].items() if acc == acc}
                    if not finite:
                        raise FloatingPointError(f"{name}: every setting diverged")
                    chosen[name] = max(finite, key=finite.get)
                    print(f"{name}: chosen {chosen[name]:g} on val", flush=True)
            for name in self.variants:
                if i == 0 and name in chosen:   # the search already ran it
                    m = run / search_dir(name, chosen[name]) / "last.pth"
                else:
                    m = self.treat(run, name, model, seed, self.variant_args(
                        name, masks, grads, chosen.get(name), chosen))
                rows.setdefault(name, []).append(self.scores(m))
            print(f"seed {seed} done in {time.time() - t0:.0f} s", flush=True)
        result = {"args": vars(a), "rows": rows,
                  "search": {k: {f"{h:g}": v for h, v in d.items()} for k, d in search.items()},
                  "chosen": chosen, "score": summarize(rows)}
        self.write(result)
        return result

    def label(self, key: str) -> str:
        return "Untreated model" if key == "untreated" and not self.has_clean else LABELS[key]

    def write(self, result: dict) -> None:
        a, rows = self.args, result["rows"]
        out = Path(a.results_dir)
        scored = result["score"]["models"]
        keys = list(scored)
        test = "random-decoy test" if self.has_clean else "test"
        lines = [
            f"`{a.model_name}` on {a.base_data} ({a.train_per_class} training images per "
            f"class), decoy `{a.decoy_kind}`"
            + (f" (correlation {a.correlation:g})" if self.photo else
               f" (strength {a.decoy_strength})" if self.has_clean else "")
            + f"; {len(rows['untreated'])} seeds ({a.seeds}), mean ± std; training "
            f"{a.train_epochs} epochs, every fine-tune {a.doctor_epochs} epochs (SGD lr {a.lr}, "
            f"cosine, batch {a.batch_size}); {a.budget} annotated images per class from "
            f"`sift low`; paper weights alpha {a.alpha:.3f}, beta {a.beta:g}"
            + ("; alpha and beta chosen on val, below." if a.alphas or a.betas else "."), "",
            *table_lines(scored, self.label, self.has_clean), ""]
        if "control" in rows:
            lines.append("vs control: the paired per-seed difference of the test top-1 to the "
                         "fine-tune control, mean [95 % t-interval over seeds].")
        if self.has_clean:
            gap = statistics.mean(c - u for c, u in zip(points(rows, "clean", "test"),
                                                          points(rows, "untreated", "test")))
            lines += [
                f"Gap: the clean-trained reference minus the untreated decoy model on the "
                f"random-decoy test set, {gap:.1f} points (mean over seeds). Share of the gap: "
                f"the mean over seeds of each seed's share, [95 % t-interval]. The goal: "
                f"{goal_text()}.",
                yardstick_line(result["score"]["yardstick"])]
        if any("worst_group" in e for e in scored.values()):
            lines.append("Worst group: the lowest accuracy over the groups (class, background "
                         "place agrees with the class) of the random-decoy test set.")
        for name, (label, _) in SEARCHED.items():
            if result["search"].get(name):
                lines.append(f"Searched on the val split of the first seed: {label} "
                             + ", ".join(f"{h}: {100 * v:.1f} %" if v == v else f"{h}: diverged"
                                         for h, v in result["search"][name].items())
                             + f" (chosen {result['chosen'][name]:g}).")
        classes = range(len(rows["untreated"][0]["background_share"]))
        shares = {k: [statistics.mean(r["background_share"][c] for r in rows[k])
                      for c in classes] for k in keys}
        lines += ["", "Diagnosis: share (%) of the class score's gradient at the first conv that "
                      "lies on the background of the held-out val images, per class "
                      "(mean over seeds):", "",
                  "| model | " + " | ".join(str(c) for c in classes) + " | mean |",
                  "|---|" + "---|" * (len(classes) + 1)]
        for k, v in shares.items():
            lines.append(f"| {self.label(k)} | " + " | ".join(f"{100 * x:.0f}" for x in v)
                         + f" | {100 * statistics.mean(v):.0f} |")
        text = "\n".join(lines) + "\n"
        name = a.table_name or ("shortcut" if self.has_clean else "gains")
        atomic_write_text(out / f"{name}.md", text)
        atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2) + "\n")
        if a.results_file:   # opt-in: the section of RESULTS.md, with the command and commit
            recorded = json.loads((self.out / "config.json").read_text()).get("commit")
            write_section(f"{name}_{a.model_name}_{a.decoy_kind}", text,
                          "python -m scripts.shortcut_benchmark " + " ".join(sys.argv[1:]),
                          a.results_file, measured_on=measured_on(recorded, commit()))
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, 1.2 + 0.4 * len(keys)),
                                     layout="constrained")
        ax.barh([self.label(k) for k in keys][::-1], [scored[k]["test"][0] for k in keys][::-1],
                xerr=[scored[k]["test"][1] for k in keys][::-1], color="tab:blue")
        ax.set_xlabel(f"{test} top-1 (%)")
        ax.set_title("Treatment")
        width = 0.8 / len(shares)
        for j, (k, v) in enumerate(shares.items()):
            bx.bar([c + j * width for c in classes], [100 * x for x in v], width,
                   label=self.label(k))
        bx.set_xticks([c + 0.4 - width / 2 for c in classes], [str(c) for c in classes])
        bx.set_xlabel("class")
        bx.set_ylabel("gradient on background (%)")
        bx.set_title("Diagnosis (first conv)")
        fig.legend(*bx.get_legend_handles_labels(), fontsize=7,
                   loc="outside right upper")        # beside the bars, not over them
        save_figure(fig, out / f"{name}.png")
        plt.close(fig)
        print(text)


def measured_on(recorded: str | None, now: str) -> str | None:
    """The commit(s) a table was measured on: the out_dir's first runs (``config.json``),
    and this checkout's when it differs (runs added later, e.g. another variant, and the
    table ran here)."""
    return recorded if recorded in (None, now) else \
        f"{recorded} (first runs; later ones and the table: {now})"


def predict_split(cfg: TestConfig) -> dict:
    """``cfg.model_path``'s prediction for every image of the ``cfg.data_type`` split of
    ``cfg.data_dir`` (eval transforms, dataset order): ``{"files": ["<class>/<file>", ...],
    "labels": [...], "preds": [...]}``."""
    _, device, dataset, setup, loader = evaluation_setup(cfg)
    p = image_sift.predict(setup.model, loader, device, progress=False)
    return {"files": [rel for rel, _ in dataset.samples], "labels": p.labels.tolist(),
            "preds": p.preds.tolist()}


def main(args: argparse.Namespace) -> dict:
    return Benchmark(args).run()


if __name__ == "__main__":
    run_main(main, get_args_parser())
