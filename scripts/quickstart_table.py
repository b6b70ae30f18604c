"""Test every quickstart model and print one table (also written to results/quickstart.md).

Each model (original, fine-tune control, +Channel, +Space, +All) is evaluated with
``test.py`` at its best and final epoch on the decoy-free test set (the plain digits) and,
for the final epoch, on the decoy test set (a random class's shade in the corner).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test as test_script  # noqa: E402
from utils import atomic_write_text  # noqa: E402

VARIANTS = (("Original model", "models", "model_ori.pth"),
            ("Fine-tune control", "control/models", "model_doctor.pth"),
            ("+Channel", "channel/models", "model_doctor.pth"),
            ("+Space", "space/models", "model_doctor.pth"),
            ("+All", "all/models", "model_doctor.pth"),
            ("+Kernels (ours, not in the paper)", "kernels/models", "model_doctor.pth"))


def run_test(args, model_path: Path, data_dir: str, tag: str) -> dict:
    argv = ["--model_name", args.model_name, "--data_name", args.data_name,
            "--model_path", str(model_path), "--data_dir", data_dir, "--workers", "0",
            "--no_progress", "--result_path", str(model_path.parent / f"test_{tag}.json")]
    with contextlib.redirect_stdout(io.StringIO()):
        return test_script.main(test_script.get_args_parser().parse_args(argv))


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def build_table(args) -> str:
    exp_dir, lines, base = Path(args.exp_dir), [], None
    for label, sub, best_file in VARIANTS:
        folder = exp_dir / sub
        final = run_test(args, folder / "last.pth", args.clean_data_dir, "final_clean")
        best = run_test(args, folder / best_file, args.clean_data_dir, "best_clean")
        decoy = run_test(args, folder / "last.pth", args.decoy_data_dir, "final_decoy")
        if base is None:
            base = final["top1"]
            head = ["model", "final top-1", "best top-1", "decoy test top-1 (final)"] + \
                   [f"class {c}" for c in final["classes"]]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        gain = "" if label == VARIANTS[0][0] else f" ({100 * (final['top1'] - base):+.1f})"
        cells = [label, pct(final["top1"]) + gain, pct(best["top1"]), pct(decoy["top1"])]
        lines.append("| " + " | ".join(cells + [pct(a) for a in final["per_class"]]) + " |")
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
    args = p.parse_args()
    exp_dir = Path(args.exp_dir)
    text = ("# Quickstart: Model Doctor on decoy digits\n\n"
            "Test accuracy (%) on the decoy-free digits test set unless stated; per-class "
            "columns are final-epoch; brackets: change of the final top-1 vs the original "
            "model. Best epoch is chosen on the test set (released behaviour) and is shown "
            "for comparison only.\n\n" + build_table(args) + "\n")
    if args.seconds is not None:
        text += f"\nPipeline wall time before this table: {args.seconds} s.\n"
    figures = sorted(str(f) for f in exp_dir.rglob("*.png")
                     if not {"sift", "masks"} & set(f.parts))
    text += "\nFigures:\n" + "".join(f"- {f}\n" for f in figures)
    print(text)
    atomic_write_text(Path(args.out_dir) / "quickstart.md", text)
    print(f"wrote {Path(args.out_dir) / 'quickstart.md'}")


if __name__ == "__main__":
    main()
