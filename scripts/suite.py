"""The shortcut suite: one row per treatment, per shortcut family its share of the gap and
whether it meets the cure's goal.

Reads the ``shortcut.json`` that ``scripts/shortcut_benchmark.py`` wrote for each family (all
of one network) and scores them as the benchmark's own table does
(:func:`scripts.shortcut_score.summarize`): the share of the gap is the mean over seeds of
each seed's share with its 95 % t-interval; the goal is met when a treatment recovers at least
90 % of the gap over at least 3 seeds, scores at least RRR with every mask on the random-decoy
test and not below the untreated model on the decoy-free test. Writes ``results_dir/suite.md``
and ``suite.json``; with ``--results_file`` also the section ``suite_<model>`` of that file.
``bash scripts/shortcut_benchmark.sh families=texture,photo`` runs the families, then this.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts.results import write_section
from scripts.shortcut_score import NOT_TREATMENTS, YARDSTICK_POINTS, goal_text, summarize
from scripts.variants import LABELS
from utils import atomic_write_text
from utils.cli import run_main


def family_name(args: dict) -> str:
    """``texture60``, ``photo0.95``: the decoy kind and the setting that shapes it."""
    kind = args["decoy_kind"]
    if kind == "photo":
        size = f"_{args['image_size']}px" if args.get("image_size", 64) != 64 else ""
        return f"photo{args['correlation']:g}{size}"
    return f"{kind}{args['decoy_strength']}" if kind == "texture" else kind


def read_family(path: Path) -> tuple[str, dict]:
    """A family's name and :func:`summarize` of its ``shortcut.json``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run the family's benchmark first)")
    result = json.loads(path.read_text())
    if "clean" not in result.get("rows", {}):
        raise ValueError(f"{path}: no clean-trained reference (a decoy-free run has no gap); "
                         f"give the shortcut.json of a decoy family")
    return family_name(result["args"]), {"model": result["args"]["model_name"],
                                         "seeds": result["args"]["seeds"],
                                         **summarize(result["rows"])}


def share_cell(entry: dict | None) -> str:
    """``93 % ± 4 (yes)``: the share of the gap, the half-width of its 95 % t-interval (none
    below 2 seeds) and whether the goal is met; ``–`` where the family did not run it."""
    if entry is None:
        return "–"
    share = entry["share"]
    verdict = "yes" if not entry["goal"] else "no"
    if share is None:
        return f"no gap in a seed ({verdict})"
    text = f"{100 * share['mean']:.0f} %"
    if share["low"] is not None:
        text += f" ± {100 * (share['high'] - share['low']) / 2:.0f}"
    return f"{text} ({verdict})"


def suite_table(families: dict[str, dict]) -> str:
    """The suite's markdown: a line per family (gap, yardstick), then one row per treatment
    with a column per family and whether it meets the goal on every family."""
    names = list(families)
    models = {f["model"] for f in families.values()}
    if len(models) != 1:
        raise ValueError(f"the families were run with different networks ({sorted(models)}): "
                         f"one suite per network")
    treatments = []
    for f in families.values():
        treatments += [k for k in f["models"] if k not in NOT_TREATMENTS and k not in treatments]
    lines = [f"`{models.pop()}`, {len(names)} shortcut famil{'y' if len(names) == 1 else 'ies'}. "
             f"Per family: the share of the gap recovered on the random-decoy test (mean over "
             f"seeds of each seed's share ± half the 95 % t-interval) and whether the treatment "
             f"meets the goal there: {goal_text()}.", "",
             "| family | seeds | gap (points) | yardstick: clean reference, random-decoy − "
             "decoy-free test |", "|---|---|---|---|"]
    for name, f in families.items():
        m, check = f["models"], f["yardstick"]
        gap = m["clean"]["test"][0] - m["untreated"]["test"][0]
        verdict = "passes" if check["passes"] else "FAILS"
        lines.append(f"| {name} | {f['seeds']} | {gap:.1f} | {check['difference']:+.1f} "
                     f"({verdict}, within {YARDSTICK_POINTS:g}) |")
    lines += ["", "| treatment | " + " | ".join(names) + " | meets the goal on every family |",
              "|---|" + "---|" * (len(names) + 1)]
    for key in treatments:
        entries = [f["models"].get(key) for f in families.values()]
        every = all(e is not None and not e["goal"] for e in entries)
        lines.append(f"| {LABELS[key]} | " + " | ".join(share_cell(e) for e in entries)
                     + f" | {'yes' if every else 'no'} |")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--inputs", nargs="+", required=True,
                   help="each family's shortcut.json (scripts/shortcut_benchmark.py)")
    p.add_argument("--results_dir", default="results", help="suite.md and suite.json")
    p.add_argument("--results_file", default=None,
                   help="also write the table as the section suite_<model> of this file "
                        "(RESULTS.md)")
    return p


def main(args: argparse.Namespace) -> str:
    families: dict[str, dict] = {}
    for path in map(Path, args.inputs):
        name, family = read_family(path)
        if name in families:
            raise ValueError(f"--inputs: family {name} given twice ({path})")
        families[name] = family
    text = suite_table(families)
    out = Path(args.results_dir)
    atomic_write_text(out / "suite.md", text)
    atomic_write_text(out / "suite.json", json.dumps(families, indent=2) + "\n")
    if args.results_file:
        model = next(iter(families.values()))["model"]
        write_section(f"suite_{model}", text, "python -m scripts.suite " + " ".join(sys.argv[1:]),
                      args.results_file)
    print(text)
    return text


if __name__ == "__main__":
    run_main(main, get_args_parser())
