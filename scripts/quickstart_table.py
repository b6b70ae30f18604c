"""Test every quickstart model and print one table (also written to results/quickstart.md).

Each model (original, fine-tune control, +Channel, +Space, +All, +Kernels) is evaluated with
``test.py`` at its final epoch on the random-decoy test set (a random class's texture in the
background) and the decoy-free test set (the plain digits), and at its best epoch; the
diagnosis column is the share of the class-score gradient on the test images' background.
"""
from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np  # noqa: E402

from core.config import TestConfig  # noqa: E402
from core.diagnose import split_background_shares  # noqa: E402
from core.engine import run_test as evaluate_model  # noqa: E402
from scripts.dirs import ExperimentDirs  # noqa: E402
from scripts.variants import LABELS, PAPER  # noqa: E402
from scripts.results import write_section  # noqa: E402
from utils import atomic_write_text  # noqa: E402
from utils import validate  # noqa: E402

ORIGINAL = "Original model"
QUICKSTART_VARIANTS = (*PAPER, "kernels_reinit_deep")   # what scripts/quickstart.sh treats


def models_of(exp: ExperimentDirs) -> list[tuple[str, Path]]:
    """``(row label, best-epoch checkpoint)``: the original, then each quickstart treatment."""
    return [(ORIGINAL, exp.model_ori)] + [(LABELS[v], exp.treated_model(v))
                                          for v in QUICKSTART_VARIANTS]


def run_test(args, model_path: Path, data_dir: str, tag: str) -> dict:
    argv = ["--model_name", args.model_name, "--data_name", args.data_name,
            "--model_path", str(model_path), "--data_dir", data_dir, "--workers", "0",
            "--no_progress", "--result_path", str(model_path.parent / f"test_{tag}.json")]
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate_model(TestConfig.parse(argv))


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def model_background_share(args, model_path: Path) -> float:
    """Mean share of the class score's gradient at the first conv on the background of the
    decoy test images (their object masks): the diagnosis of a background shortcut."""
    shares = split_background_shares(args.model_name, model_path, args.data_name,
                                     args.decoy_data_dir, "test")
    return float(np.nanmean(shares))


def build_table(args) -> str:
    lines, base = [], None
    for label, best_path in models_of(ExperimentDirs(args.exp_dir)):
        folder = best_path.parent
        decoy = run_test(args, folder / "last.pth", args.decoy_data_dir, "final_decoy")
        final = run_test(args, folder / "last.pth", args.clean_data_dir, "final_clean")
        best = run_test(args, best_path, args.decoy_data_dir, "best_decoy")
        share = model_background_share(args, folder / "last.pth")
        if base is None:
            base = decoy["top1"]
            head = ["model", "random-decoy test top-1", "gradient on background",
                    "decoy-free test top-1", "best epoch (test-selected)"] + \
                   [f"class {c}" for c in decoy["classes"]]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        gain = "" if label == ORIGINAL else f" ({100 * (decoy['top1'] - base):+.1f})"
        cells = [label, pct(decoy["top1"]) + gain, f"{100 * share:.0f} %", pct(final["top1"]),
                 pct(best["top1"])]
        lines.append("| " + " | ".join(cells + [pct(a) for a in decoy["per_class"]]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--model_name", required=True)
    p.add_argument("--data_name", required=True)
    p.add_argument("--clean_data_dir", required=True, help="decoy-free dataset root")
    p.add_argument("--decoy_data_dir", required=True, help="decoy dataset root")
    p.add_argument("--out_dir", default="results")
    p.add_argument("--seconds", type=int, default=None, help="pipeline wall time so far")
    p.add_argument("--results_file", default=None,
                   help="also write the table as section 'quickstart' of this file "
                        "(RESULTS.md; default: only OUT_DIR/quickstart.md)")
    p.add_argument("--command", default="bash scripts/quickstart.sh",
                   help="the command that produced the runs, recorded with the section")
    args = validate.parse_args(p)
    exp_dir = Path(args.exp_dir)
    text = ("# Quickstart: Model Doctor on decoy digits\n\n"
            "Final-epoch test accuracy (%) on the random-decoy test set (each test image "
            "carries a random class's background texture; a model that learnt the shortcut "
            "fails there), with the change against the original model in brackets and the "
            "per-class accuracies; the decoy-free digits test set (backgrounds without any "
            "texture, unseen in training); the share of the class score's gradient at the "
            "first conv that lies on the background of the test images (the diagnosis of "
            "the shortcut); and the best epoch chosen on the test set (released behaviour, "
            "for comparison only).\n\n" + build_table(args) + "\n")
    if args.seconds is not None:
        text += f"\nPipeline wall time before this table: {args.seconds} s.\n"
    figures = sorted(str(f) for f in exp_dir.rglob("*.png")
                     if not {"sift", "masks"} & set(f.parts))
    text += "\nFigures:\n" + "".join(f"- {f}\n" for f in figures)
    print(text)
    atomic_write_text(Path(args.out_dir) / "quickstart.md", text)
    print(f"wrote {Path(args.out_dir) / 'quickstart.md'}")
    if args.results_file:
        body = text.split("\n", 2)[2]          # the section has its own heading
        body = body.split("\nFigures:\n")[0].rstrip() + "\n"
        write_section("quickstart", body, args.command, args.results_file)
        print(f"wrote section 'quickstart' of {args.results_file}")


if __name__ == "__main__":
    main()
