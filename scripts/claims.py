"""Verdicts on the paper's claims from the shortcut benchmark's run folders.

    python -m scripts.claims --runs output/claims/smallcnn_fmnist

For each setting (one ``--runs`` folder of ``scripts/shortcut_benchmark.py``, decoy-free):

* **convergence** of every trained model: test top-1 and train loss per epoch (a PNG beside
  the results and a table of a few epochs). Converged = the mean test top-1 over the last
  fifth of training is within ``--acc_tol`` points of the best epoch, or within one standard
  error of the best epoch's top-1 where that is larger (``sqrt(p (1 - p) / n)`` on the ``n``
  test images: on 3,000 images at 58 % it is 0.9 points, and the best of 60 noisy epochs
  sits above a flat curve's mean by about that much), and the train loss is flat: its
  least-squares line over the last fifth changes by at most ``--loss_tol`` of the loss's whole
  fall (first epoch minus the last fifth's mean), i.e. the last fifth of training does less
  than that share of the learning. (Relative to the loss's own level, a model that fits its
  training set never looks flat: 0.010 -> 0.009 would be a 10 % change.) A seed whose model
  fails is left out of the paired gains; a setting with fewer than 2 converged seeds is "not
  converged" and its claims not tested.
* **paired gains** of each treatment over the fine-tune control, per seed, under two
  selection rules: the final epoch of both, and the best test epoch of both (the released
  code's rule). Mean, std, n, the 95 % t-interval of the paired difference, its half-width
  (the gain this test resolves) and the minimal detectable effect at 80 % power
  (``(z_0.975 + z_0.8) * SE = 2.8 * SE``, ``SE = std / sqrt(n)``); and the control's own
  selection bias (best test epoch minus final).
* **verdict** against the paper's Table 1 number (see ``verdict``).

A photo setting with backgrounds independent of the class (``--decoy_kind photo
--correlation 0 --image_size 96``) is the **large-image stand-in**: its claims are Table 1's
STL-10 column. Its seed folders may also hold the paper's ablations (``scripts/ablation.py``
with ``--exp_dir seedN --work_dir seedN/ablation --out_dir seedN/ablation``, as
``scripts/reproduce_claims.sh`` runs them): Table 2 (annotated images), Table 3 (mask
expansion) and Fig. 6 (constrained layer), each setting's paired gain over the ablation's own
fine-tune control, against ``--paper_ablations``.

With ``--robustness_json`` (``core/robustness.py``'s output) it also tabulates Fig. 3.

Writes the section ``claims`` of ``--results_file`` (``scripts/results.py``) and the curves
to ``--figures_dir``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from core.visualize import save_figure  # noqa: E402
from scripts.results import write_section  # noqa: E402

HOLDS, FAILS, UNRESOLVED = "holds", "does not hold", "not resolved"
MDE_FACTOR = 2.8            # z_0.975 + z_0.80 = 1.960 + 0.842
TREATMENTS = {"channel": ("channel", "+Channel"), "space": ("space", "+Space"),
              "all": ("all", "+All")}   # variant -> (Table 1 column, label)
SEARCH_PREFIX = {"channel": ("channel_a", "alpha"), "space": ("space_b", "beta")}
RULES = {"final": "final epoch", "best": "best test epoch (released rule)"}
PAPER_ABLATIONS = Path(__file__).resolve().with_name("paper_ablations.csv")


# -- curves ---------------------------------------------------------------------------------
def read_epochs(path: Path) -> list[dict]:
    """The training epochs of an ``epochs.jsonl`` (epoch >= 1; epoch 0 is the start model;
    an epoch logged twice, by a resumed run, counts once: its last line)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by_epoch = {r["epoch"]: r for r in rows if r["epoch"] >= 1}
    return [by_epoch[e] for e in sorted(by_epoch)]


def convergence(acc: list[float], loss: list[float], acc_tol: float = 0.3,
                loss_tol: float = 0.05, num_test: int | None = None) -> dict:
    """Check one curve (``acc`` in points, ``loss`` the train loss, one value per epoch).

    ``acc_gap``: best accuracy minus the mean over the last fifth (at least 2 epochs), at most
    ``acc_limit`` = the larger of ``acc_tol`` and the best epoch's standard error on
    ``num_test`` test images (None: ``acc_tol`` alone);
    ``loss_change``: the fitted change of the train loss across the last fifth, relative to
    the loss's fall from the first epoch to the last fifth's mean (negative: still falling;
    a loss that did not fall at all counts as not flat)."""
    if len(acc) != len(loss) or len(acc) < 2:
        raise ValueError("a convergence check needs at least 2 epochs of accuracy and loss")
    k = max(2, math.ceil(len(acc) / 5))
    tail_loss = loss[-k:]
    best, tail_mean = max(acc), statistics.mean(acc[-k:])
    acc_gap = best - tail_mean
    slope = stats.linregress(range(k), tail_loss).slope
    fall = loss[0] - statistics.mean(tail_loss)
    loss_change = float(slope * (k - 1) / fall) if fall > 0 else -math.inf
    p = best / 100
    se = 100 * math.sqrt(p * (1 - p) / num_test) if num_test else 0.0
    acc_limit = max(acc_tol, se)
    acc_ok, loss_ok = bool(acc_gap <= acc_limit), bool(abs(loss_change) <= loss_tol)
    return {"epochs": len(acc), "window": k, "best": best, "tail_mean": tail_mean,
            "acc_gap": acc_gap, "acc_limit": acc_limit, "loss_change": loss_change,
            "acc_ok": acc_ok, "loss_ok": loss_ok, "converged": acc_ok and loss_ok}


# -- paired statistics -----------------------------------------------------------------------
@dataclass
class Paired:
    diffs: list[float]
    mean: float
    std: float
    n: int
    low: float | None = None      # 95 % t-interval (None below 2 seeds)
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def mde(self) -> float | None:
        return None if self.n < 2 else MDE_FACTOR * self.std / math.sqrt(self.n)


def paired(diffs: list[float], level: float = 0.95) -> Paired:
    """Mean, sample std and the ``level`` t-interval of paired differences."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired differences")
    mean = statistics.mean(diffs)
    if n < 2:
        return Paired(list(diffs), mean, 0.0, n)
    std = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return Paired(list(diffs), mean, std, n, mean - half, mean + half)


def select(rows: list[dict], rule: str) -> float:
    """Test top-1 in points of a run's epochs under ``rule`` (``final`` or ``best``)."""
    accs = [100 * r["test/top1"] for r in rows]
    return {"final": accs[-1], "best": max(accs)}[rule]


def verdict(low: float | None, high: float | None, paper: float | None) -> str:
    """The claim "the gain is ``paper``" against the interval [low, high] of our gain.

    * holds: the interval excludes 0 on the paper's side (low > 0 for a positive number,
      high < 0 for a negative one), whatever its size;
    * does not hold: the interval excludes the paper's number and does not show its sign;
    * not resolved: the interval contains both 0 and the paper's number.
    A paper number of exactly 0.00 has no side: it can only be *not resolved* (the interval
    contains 0) or *does not hold* (it excludes 0). Endpoints count as inside. Without an
    interval (fewer than 2 seeds) or a paper number the claim is not tested."""
    if paper is None:
        return "no paper number"
    if low is None:
        return "not tested (n < 2)"
    if (paper > 0 and low > 0) or (paper < 0 and high < 0):
        return HOLDS
    if low <= 0 <= high and low <= paper <= high:
        return UNRESOLVED
    return FAILS


# -- the paper's Table 1 ---------------------------------------------------------------------
def paper_gain(table: Path, model: str, data: str, column: str) -> tuple[float | None, str]:
    """The paper's gain (points) and where it comes from: the model's row, or, for a network
    the paper did not train, the median of the dataset's column over the paper's networks."""
    with open(table, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["data_name"] == data]
    own = [r[column] for r in rows if r["model"] == model]
    if own:
        return (float(own[0]), f"paper, {model}") if own[0] else (None, "not in the paper")
    values = [float(r[column]) for r in rows if r[column]]
    if not values:
        return None, "not in the paper"
    return statistics.median(values), f"paper's median over its {len(values)} networks"


def is_standin(config: dict) -> bool:
    """The large-image stand-in: Fashion-MNIST items on photographs whose place is independent
    of the class (photo, correlation 0), read against Table 1's STL-10 column."""
    return config.get("decoy_kind") == "photo" and float(config.get("correlation", 1)) == 0


def image_size(config: dict) -> int:
    """The side of a photo setting's images (the benchmark records it where it is not 64)."""
    return int(config.get("image_size", 64))


def table1_cell(config: dict) -> tuple[str | None, str]:
    """The Table 1 dataset a setting's claims are read against (None: a decoy setting, no
    Table 1 cell) and the claim's name."""
    if is_standin(config):
        return "stl10", (f"Table 1, STL-10 stand-in ({image_size(config)} px Fashion-MNIST on "
                         "photographs)")
    data = config["base_data"]
    return (data if config.get("decoy_kind", "none") == "none" else None), f"Table 1, {data}"


# -- the paper's ablations (Tables 2, 3 and Fig. 6) ------------------------------------------
# study -> (the paper's table, the claim's name, a setting in words)
STUDIES = {
    "annotations": ("Table 2", "Table 2: gain vs annotated images per class",
                    lambda s: f"{s} annotated images per class"),
    "expansion": ("Table 3", "Table 3: gain vs mask expansion",
                  lambda s: f"mask expanded {s} px"),
    "depth": ("Fig. 6", "Fig. 6: gain vs depth of the constrained layer",
              lambda s: f"conv {s} from the last"),
}
ANNOTATION_TOLERANCE = 0.25   # our share of annotated images within 25 % of the paper's


def read_paper_ablations(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def paper_ablation(paper: list[dict], study: str, variant: str, setting: int,
                   ratio: float | None, size: int) -> tuple[float | None, str]:
    """The paper's gain for one ablation setting and where it comes from.

    * annotations: the paper's row whose share of annotated training images is nearest to
      ours (``ratio``), within :data:`ANNOTATION_TOLERANCE` of it (the paper annotated
      100..1000 of its training images; our budgets are per class of a smaller set);
    * expansion: the paper's pixels scaled from its image side to ours (``size``), rounded;
    * depth: the same layer (the paper's text gives the last conv only)."""
    rows = [r for r in paper if r["study"] == study and r["variant"] == variant]

    def where(r: dict) -> str:
        return f"paper, {r['model']} {r['data_name']}, {r['source'].split(' (')[0]}"
    if study == "annotations" and ratio is not None and rows:
        best = min(rows, key=lambda r: abs(float(r["ratio"]) - ratio))
        if abs(float(best["ratio"]) - ratio) <= ANNOTATION_TOLERANCE * float(best["ratio"]):
            return float(best["gain"]), (f"{where(best)}: {best['setting']} images = "
                                         f"{100 * float(best['ratio']):g} % of train")
    if study == "expansion":
        for r in rows:
            if math.floor(int(r["setting"]) * size / int(r["image_size"]) + 0.5) == setting:
                return float(r["gain"]), (f"{where(r)}: {r['setting']} px at "
                                          f"{r['image_size']} px")
    if study == "depth":
        for r in rows:
            if int(r["setting"]) == setting:
                return float(r["gain"]), f"{where(r)}: the last conv"
    return None, "not in the paper"


def sign_verdict(low: float | None, high: float | None) -> str:
    """A claim of sign only (the gain is positive): holds when the interval excludes 0 above,
    does not hold when it excludes 0 below, else not resolved."""
    if low is None:
        return "not tested (n < 2)"
    return HOLDS if low > 0 else FAILS if high < 0 else UNRESOLVED


# -- one setting -----------------------------------------------------------------------------
def finished(run: Path) -> list[dict] | None:
    """The epochs of a finished fine-tune or training run, else None."""
    if not (run / "result.json").is_file() or not (run / "epochs.jsonl").is_file():
        return None
    rows = read_epochs(run / "epochs.jsonl")
    record = run / "args.json"
    wanted = json.loads(record.read_text()).get("num_epochs") if record.is_file() else None
    return rows if rows and (wanted is None or len(rows) == wanted) else None


def variant_run(seed_dir: Path, variant: str) -> Path:
    """A variant's run of one seed; the first seed's +Channel/+Space are the search runs with
    the weight the benchmark chose (read from another seed's run, else the best on val)."""
    if (seed_dir / variant).is_dir() or variant not in SEARCH_PREFIX:
        return seed_dir / variant
    prefix, key = SEARCH_PREFIX[variant]
    candidates = sorted((seed_dir / "search").glob(f"{prefix}*"))
    for other in sorted(seed_dir.parent.glob("seed*/" + variant + "/args.json")):
        weight = json.loads(other.read_text())[key]
        for c in candidates:
            record = c / "args.json"
            if record.is_file() and json.loads(record.read_text())[key] == weight:
                return c

    def val(c: Path) -> float:
        files = list(c.glob("bench_*_val.json"))
        return json.loads(files[0].read_text())["top1"] if files else -1.0
    return max(candidates, key=val) if candidates else seed_dir / variant


def test_images(models: Path) -> int | None:
    """The number of test images a trained model was evaluated on (its benchmark test record),
    None where there is none."""
    for record in sorted(models.glob("bench_*_test.json")):
        n = json.loads(record.read_text()).get("num_images")
        if isinstance(n, int) and n > 0:
            return n
    return None


def seed_dirs(runs: Path) -> list[Path]:
    return sorted((p for p in runs.glob("seed*") if p.name[4:].isdigit()),
                  key=lambda p: int(p.name[4:]))


def analyse(runs: Path, table: Path, acc_tol: float, loss_tol: float,
            paper_ablations: list[dict] | None = None) -> dict:
    config = json.loads((runs / "config.json").read_text())
    curves, checks = {}, {}
    for s in seed_dirs(runs):
        # the benchmark's "decoy" folder holds the trained model (decoy-free or not)
        for kind, name in (("decoy", s.name), ("clean", f"{s.name} clean")):
            rows = finished(s / kind / "models")
            if rows:
                curves[name] = rows
                checks[name] = convergence(
                    [100 * r["test/top1"] for r in rows], [r["train/loss"] for r in rows],
                    acc_tol, loss_tol, num_test=test_images(s / kind / "models"))
    runs_by_variant: dict[str, dict[str, list[dict]]] = {}
    for s in seed_dirs(runs):
        for variant in ("control", *TREATMENTS):
            rows = finished(variant_run(s, variant))
            if rows:
                runs_by_variant.setdefault(variant, {})[s.name] = rows
    # a seed counts only when every model it trained passed the convergence check (a model
    # that has not converged is not treated): the rule does not look at any treatment
    # (with fewer than 2 converged seeds nothing is left out: the pairs are shown, untested)
    unconverged = sorted({name.split()[0] for name, c in checks.items() if not c["converged"]})
    converged_seeds = {name.split()[0] for name in checks} - set(unconverged)
    left_out = unconverged if len(converged_seeds) >= 2 else []
    control = {s: r for s, r in runs_by_variant.get("control", {}).items() if s not in left_out}
    gains = {}
    for variant, per_seed in runs_by_variant.items():
        if variant == "control":
            continue
        common = [s for s in per_seed if s in control]
        if not common:
            continue
        column, label = TREATMENTS[variant]
        data, _ = table1_cell(config)
        value, source = (paper_gain(table, config["model_name"], data, column) if data else
                         (None, "decoy setting: not a Table 1 cell"))
        # the treatment changed nothing: the control's test top-1 at every epoch, every seed
        identical = all([r["test/top1"] for r in per_seed[s]] ==
                        [r["test/top1"] for r in control[s]] for s in common)
        gains[variant] = {"label": label, "paper": value, "source": source, "seeds": common,
                          "identical": identical,
                          **{rule: paired([select(per_seed[s], rule) - select(control[s], rule)
                                           for s in common]) for rule in RULES}}
    bias = (paired([select(r, "best") - select(r, "final") for r in control.values()])
            if control else None)
    ablations = (analyse_ablations(runs, config, left_out, paper_ablations)
                 if is_standin(config) and paper_ablations is not None else {})
    return {"config": config, "curves": curves, "checks": checks, "gains": gains,
            "bias": bias, "unconverged": left_out, "ablations": ablations,
            "converged": len(converged_seeds) >= 2}


# -- the ablations on one setting ------------------------------------------------------------
def ablation_runs(seed_dir: Path, study: str) -> tuple[dict, dict] | None:
    """One seed's finished ablation runs of ``study``: ``({(variant, setting): (row,
    epochs)}, control epochs)``, from ``seedN/ablation/ablation_<study>.json``; the run
    folders are beside it (``--work_dir`` = ``--out_dir``). None without a finished control."""
    path = seed_dir / "ablation" / f"ablation_{study}.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    ctrl = table.get("control")
    control = finished(path.parent / ctrl["run"] / "models") if ctrl and "run" in ctrl else None
    if control is None:
        return None
    runs = {}
    for row in table["rows"]:
        if row.get("run") in (None, ctrl["run"]):   # k = 0 annotations: the control itself
            continue
        rows = finished(path.parent / row["run"] / "models")
        if rows:
            runs[(row["variant"], row["setting"])] = (row, rows)
    return runs, control


def analyse_ablations(runs: Path, config: dict, left_out: list[str],
                      paper: list[dict]) -> dict[str, dict]:
    """Per study with outputs: each (variant, setting)'s paired gain over the ablation's
    fine-tune control across the seeds that ran it (both selection rules), the paper's
    number; for Fig. 6 also the depth trend (last conv minus the shallowest studied)."""
    order = {v: i for i, v in enumerate(TREATMENTS)}
    out = {}
    for study in STUDIES:
        per_seed = {s.name: got for s in seed_dirs(runs) if s.name not in left_out
                    and (got := ablation_runs(s, study)) is not None}
        if not per_seed:
            continue
        keys = sorted({k for got, _ in per_seed.values() for k in got},
                      key=lambda k: (order.get(k[0], 9), k[1]))
        entries = []
        for variant, setting in keys:
            seeds = [s for s, (got, _) in per_seed.items() if (variant, setting) in got]
            row = per_seed[seeds[0]][0][(variant, setting)][0]
            value, source = paper_ablation(paper, study, variant, setting, row.get("ratio"),
                                           image_size(config))
            entries.append({
                "variant": variant, "setting": setting, "seeds": seeds, "paper": value,
                "source": source, "row": row,
                **{rule: paired([select(per_seed[s][0][(variant, setting)][1], rule)
                                 - select(per_seed[s][1], rule) for s in seeds])
                   for rule in RULES}})
        trend = []
        if study == "depth":
            for variant in dict.fromkeys(v for v, _ in keys):
                layers = sorted(st for v, st in keys if v == variant)
                seeds = [s for s, (got, _) in per_seed.items()
                         if (variant, 0) in got and (variant, layers[-1]) in got]
                if layers[0] != 0 or len(layers) < 2 or not seeds:
                    continue
                trend.append({"variant": variant, "shallow": layers[-1], "seeds": seeds, **{
                    rule: paired([select(per_seed[s][0][(variant, 0)][1], rule)
                                  - select(per_seed[s][0][(variant, layers[-1])][1], rule)
                                  for s in seeds]) for rule in RULES}})
        out[study] = {"entries": entries, "trend": trend, "seeds": sorted(per_seed)}
    return out


def ablation_settings(runs: Path) -> str:
    """Shell assignments (``ft_epochs ft_lr ft_batch_size ft_alpha ft_beta``) of the fine-tune
    the benchmark ran in ``runs``, with the weights it chose on val: alpha of its +All (else
    +Channel) run, beta of its +All (else +Space) run, the config's where it ran neither. An
    ablation that starts from them changes one setting of the Table 1 runs only."""
    config = json.loads((Path(runs) / "config.json").read_text())
    first = seed_dirs(Path(runs))[0]

    def weight(key: str, variants: tuple[str, ...]) -> float:
        for variant in variants:
            record = variant_run(first, variant) / "args.json"
            if record.is_file():
                return json.loads(record.read_text())[key]
        return config[key]
    values = {"ft_epochs": config["doctor_epochs"], "ft_lr": config["lr"],
              "ft_batch_size": config["batch_size"],
              "ft_alpha": weight("alpha", ("all", "channel")),
              "ft_beta": weight("beta", ("all", "space"))}
    return "\n".join(f"{k}={shlex.quote(f'{v:g}')}" for k, v in values.items())


# -- report ----------------------------------------------------------------------------------
def fmt(x: float | None, sign: bool = True) -> str:
    return "–" if x is None else (f"{x:+.2f}" if sign else f"{x:.2f}")


def plot_curves(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
    for name, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [100 * r["test/top1"] for r in rows], lw=1, label=name)
        bx.plot(epochs, [r["train/loss"] for r in rows], lw=1)
    ax.set(xlabel="epoch", ylabel="test top-1 (%)", title=title)
    bx.set(xlabel="epoch", ylabel="train loss", title="train loss")
    if len(curves) <= 10:
        ax.legend(fontsize=6)
    save_figure(fig, path, dpi=90)      # small: it is committed beside RESULTS.md
    plt.close(fig)


def curve_table(curves: dict[str, list[dict]]) -> list[str]:
    """Mean over the trained models of test top-1 and train loss at a few epochs."""
    n = min(len(r) for r in curves.values())
    picks = sorted({1, max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4),
                    max(1, n - math.ceil(n / 5) + 1), n})
    lines = ["| epoch | " + " | ".join(str(e) for e in picks) + " |",
             "|---|" + "---|" * len(picks),
             "| test top-1 (%) | " + " | ".join(
                 f"{statistics.mean(100 * r[e - 1]['test/top1'] for r in curves.values()):.2f}"
                 for e in picks) + " |",
             "| train loss | " + " | ".join(
                 f"{statistics.mean(r[e - 1]['train/loss'] for r in curves.values()):.3f}"
                 for e in picks) + " |"]
    return lines


def setting_section(name: str, res: dict, figures: Path, rel: Path, acc_tol: float,
                    loss_tol: float) -> tuple[list[str], list[list[str]]]:
    """Markdown of one setting and its claim rows."""
    c = res["config"]
    _, cell = table1_cell(c)
    recipe = (f"{c['train_per_class']} training images per class, training "
              f"{c['train_epochs']} epochs, every fine-tune {c['doctor_epochs']} epochs "
              f"(SGD lr {c['lr']}, cosine, batch {c['batch_size']})")
    if is_standin(c):
        size = image_size(c)
        lines = [f"### {name}: `{c['model_name']}` on the STL-10 stand-in", "",
                 f"The large-image stand-in: Fashion-MNIST items on photographs at {size} px, "
                 f"the photograph independent of the class (correlation "
                 f"{float(c['correlation']):g}: no decoy), the network's "
                 f"{'ImageNet' if size > 64 else 'small-image'} stem; read against Table 1's "
                 f"STL-10 column. {recipe}.", ""]
    else:
        lines = [f"### {name}: `{c['model_name']}` on {c['base_data']}",
                 "", f"{recipe}; decoy `{c.get('decoy_kind')}`.", ""]
    pending = [[f"{cell} ({c['model_name']})", "–", "–", "–",
                f"not tested: no finished treatment/control pair in {name} yet"]]
    if not res["curves"]:
        lines.append("No finished training run yet: claims not tested.")
        return lines, pending
    claims = []
    png = figures / f"{name}_convergence.png"
    plot_curves(res["curves"], name, png)
    failed = [k for k, v in res["checks"].items() if not v["converged"]]
    n = len(res["checks"])
    lines += [f"**Convergence** ({n} trained model{'s' * (n != 1)}, mean over them; curves: "
              f"[{png.name}]({rel / png.name})):", "", *curve_table(res["curves"]), "",
              "| model | best top-1 | mean of last fifth | gap | its limit | train-loss change "
              f"over last fifth (≤ {100 * loss_tol:g} %) | converged |",
              "|---|---|---|---|---|---|---|"]
    for k, v in res["checks"].items():
        lines.append(f"| {k} | {v['best']:.2f} | {v['tail_mean']:.2f} | {v['acc_gap']:.2f} | "
                     f"{v['acc_limit']:.2f} | "
                     f"{100 * v['loss_change']:+.1f} % | {'yes' if v['converged'] else 'no'} |")
    left_out = (f"; the seeds whose model fails it ({', '.join(res['unconverged'])}) are left "
                "out of the paired gains" if res["unconverged"] else "")
    named = f" ({', '.join(failed)})" if failed else ""
    status = (f"converged{left_out}" if res["converged"] else
              f"**not converged**{named}: fewer than 2 seeds with converged models, its "
              "claims are not tested")
    lines += ["", f"Converged = the mean test top-1 over the last fifth of training (at least 2 "
                  f"epochs) is within {acc_tol:g} points of the best epoch, or one standard "
                  f"error of the best epoch's top-1 on the test images where that is larger "
                  f"(its limit), and the train loss is flat: the least-squares line through it "
                  f"over the last fifth changes by "
                  f"at most {100 * loss_tol:g} % of the loss's fall over training (first epoch "
                  f"to the last fifth's mean). Setting: {status}.", ""]
    if not res["gains"]:
        lines.append("No finished treatment/control pair yet.")
        return lines, pending + ablation_claims(res, lines)
    lines += ["**Paired gains** over the fine-tune control (points of test top-1; 95 % "
              "t-interval; resolves = its half-width; MDE = 2.8·SE at 80 % power):", "",
              "| treatment | selection | n | per-seed differences | mean | std | 95 % CI "
              "| resolves | MDE | paper | verdict |", "|---" * 11 + "|"]
    for variant, g in res["gains"].items():
        for rule, label in RULES.items():
            p: Paired = g[rule]
            v = gated(res, verdict(p.low, p.high, g["paper"]))
            resolves = "–" if p.half_width is None else f"±{p.half_width:.2f}"
            lines.append(f"| {g['label']} | {label} | {p.n} | {diffs(p)} | {fmt(p.mean)} | "
                         f"{fmt(p.std, False)} | {interval(p)} | {resolves} | "
                         f"{fmt(p.mde, False)} | {fmt(g['paper'])} ({g['source']}) | {v} |")
            same = " (identical to the control at every epoch)" if g.get("identical") else ""
            claims.append([f"{cell}, {g['label']} ({c['model_name']})",
                           label, f"{fmt(g['paper'])} ({g['source']})", ours(p) + same, v])
    inert = [g["label"] for g in res["gains"].values() if g.get("identical")]
    if inert:
        lines += ["", f"{', '.join(inert)}: test top-1 identical to the control's at every "
                      "epoch of every seed — the constraint did not change the model (a layer "
                      "whose dy/dm does not depend on the weights, e.g. a classifier conv "
                      "followed by ReLU and pooling; the treatment warns of it)."]
    b = res["bias"]
    if b is not None:
        lines += ["", f"Selection bias of the control alone (best test epoch minus final, "
                      f"n = {b.n}): {fmt(b.mean)} points, 95 % CI {interval(b)}."]
    return lines, claims + ablation_claims(res, lines)


def interval(p: Paired) -> str:
    return "–" if p.low is None else f"[{p.low:+.2f}, {p.high:+.2f}]"


def diffs(p: Paired) -> str:
    """The per-seed differences, signed."""
    return " ".join(f"{d:+.2f}" for d in p.diffs)


def gated(res: dict, verdict_text: str) -> str:
    """A setting's verdict, or "not tested" when its models have not converged."""
    return verdict_text if res["converged"] else "not tested (not converged)"


def ours(p: Paired) -> str:
    return f"{fmt(p.mean)}{'' if p.low is None else ' ' + interval(p)}, n = {p.n}"


def ablation_claims(res: dict, lines: list[str]) -> list[list[str]]:
    """The ablations' tables (appended to ``lines``) and their claim rows: one per study,
    variant, setting and selection rule, plus Fig. 6's depth trend."""
    c, claims = res["config"], []
    for study, found in res["ablations"].items():
        table, _, words = STUDIES[study]
        lines += ["", f"**{table} on the stand-in** (`scripts/ablation.py {study}`, seeds "
                      f"{', '.join(found['seeds'])}): paired gain of each setting over the "
                      "ablation's fine-tune control (same epochs, no constraint), points of "
                      "test top-1; the paper's numbers are VGG16's on mini-ImageNet "
                      "(`scripts/paper_ablations.csv`).", "",
                  "| variant | setting | selection | n | per-seed differences | mean | 95 % CI "
                  "| paper | verdict |", "|---" * 9 + "|"]
        for e in found["entries"]:
            label, setting = TREATMENTS[e["variant"]][1], words(e["setting"])
            if study == "annotations":
                setting += f" ({100 * e['row']['ratio']:.1f} % of train)"
            for rule, rule_label in RULES.items():
                p: Paired = e[rule]
                v = gated(res, verdict(p.low, p.high, e["paper"]))
                lines.append(f"| {label} | {setting} | {rule_label} | {p.n} | {diffs(p)} | "
                             f"{fmt(p.mean)} | {interval(p)} | {fmt(e['paper'])} "
                             f"({e['source']}) | {v} |")
                claims.append([f"{table}, STL-10 stand-in, {label}, {setting} "
                               f"({c['model_name']})", rule_label,
                               f"{fmt(e['paper'])} ({e['source']})", ours(p), v])
        for t in found["trend"]:
            label = TREATMENTS[t["variant"]][1]
            lines += ["", f"Depth trend, {label}: the last conv minus conv {t['shallow']} from "
                          "the last (the paper: the gain grows as the layer goes deeper)."]
            for rule, rule_label in RULES.items():
                p = t[rule]
                v = gated(res, sign_verdict(p.low, p.high))
                lines.append(f"- {rule_label}: {diffs(p)}; mean {fmt(p.mean)}, 95 % CI "
                             f"{interval(p)}: {v}")
                claims.append([f"Fig. 6, STL-10 stand-in, {label}: last conv minus conv "
                               f"{t['shallow']} from the last ({c['model_name']})", rule_label,
                               "> 0 (qualitative: deeper layers gain more)", ours(p), v])
    return claims


NOT_RUN = [
    ("Table 1, other datasets (MNIST, CIFAR-10/100, SVHN) and the paper's 16 networks",
     "the datasets (`scripts/prepare_data.sh`) and a GPU: 16 × 5 × 3 trainings of ~200 "
     "epochs plus 4 fine-tunes each (`scripts/reproduce_table1.sh`); GPU-weeks"),
]
STUDY_NEEDS = {
    "annotations": "one fine-tune per budget and seed",
    "expansion": "one fine-tune per expansion and seed",
    "depth": "one statistics pass per seed and one fine-tune per layer and seed",
}


def not_run(settings: dict[str, dict]) -> list[tuple[str, str]]:
    """The claims without a measurement, and what each needs; the large-image ones name
    the stand-in when the report has one."""
    standins = [res for res in settings.values() if is_standin(res["config"])]
    stand_in = ("the 96 px stand-in above is Fashion-MNIST on photographs, not STL-10"
                if standins else "`standin_models=squeezenet bash scripts/reproduce_claims.sh`"
                " runs the 96 px stand-in")
    rows = [*NOT_RUN, (
        "Table 1, real large images (STL-10 at 96 px, mini-ImageNet at 224 px): +Channel / "
        "+Space / +All", "the datasets, 20 annotated images per class and a GPU: 16 × 2 × 3 "
        f"trainings at 96/224 px; GPU-weeks ({stand_in})")]
    model = standins[0]["config"]["model_name"] if standins else "squeezenet"
    for study, (_, claim, _) in STUDIES.items():
        if not any(study in res["ablations"] for res in standins):
            rows.append((claim, f"`standin_models={model} ablations={study} bash "
                                f"scripts/reproduce_claims.sh` ({STUDY_NEEDS[study]} on the "
                                "stand-in's seeds, `scripts/ablation.py`); the paper's at "
                                "224 px with a GPU: a GPU-day"))
    return rows
FIG3 = "Fig. 3: feature noise moves adversarial, not normal, predictions"


def share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def robustness_section(path: Path) -> tuple[list[str], list[str]]:
    """Fig. 3 from ``core/robustness.py``'s JSON: its table, and a claim row. The paper's
    claim is qualitative (normal predictions stable up to δ ≈ 0.3, adversarial ones return to
    their true label), so the row reports the shares at the largest δ ≤ 0.3 without a
    verdict."""
    summary = json.loads(Path(path).read_text())
    rows = [r for r in summary["rows"] if r["delta"] is not None]
    lines = [f"### Fig. 3: `{summary['model_name']}`, noise at `{summary['layer']}`", "",
             f"{summary['num_normal']} correctly classified {summary['data_type']} images, FGSM "
             f"ε = {summary['eps']:.4f} flips {summary['num_adversarial']}; "
             f"{summary['repeats']} noise draws per image (`{summary['model_path']}`).", "",
             "| δ | normal → true | adversarial → true | adversarial → adversarial label |",
             "|---|---|---|---|"]
    lines += [f"| {r['delta']:g} | {share(r['normal_true'])} | {share(r['adversarial_true'])} "
              f"| {share(r['adversarial_same_false'])} |" for r in rows]
    within = [r for r in rows if r["delta"] <= 0.3] or rows
    at = max(within, key=lambda r: r["delta"])
    claim = [FIG3, "–", "qualitative (normal stable to δ ≈ 0.3; adversarial → true label)",
             f"at δ = {at['delta']:g}: normal → true {share(at['normal_true'])}, adversarial → "
             f"true {share(at['adversarial_true'])}", "reported, no test (qualitative claim)"]
    return lines, claim


def report(settings: dict[str, dict], figures: Path, rel: Path, acc_tol: float,
           loss_tol: float, robustness: Path | None = None) -> str:
    lines, claims = [], []
    for name, res in settings.items():
        body, rows = setting_section(name, res, figures, rel, acc_tol, loss_tol)
        lines += [*body, ""]
        claims += rows
    missing = not_run(settings)
    if robustness is not None:
        body, row = robustness_section(robustness)
        lines += [*body, ""]
        claims.append(row)
    else:
        missing.append((FIG3, "`core/robustness.py` on a trained model (CPU minutes; "
                              "`scripts/reproduce_claims.sh` runs it with fig3=1)"))
    head = ["## The paper's claims", "",
            "Verdicts: *holds* = the 95 % CI of our paired gain excludes 0 on the paper's side; "
            "*does not hold* = it excludes the paper's number and does not show its sign; "
            "*not resolved* = it contains both 0 and the paper's number (a paper number of "
            "0.00 can only be not resolved or not hold). Gains are over a fine-tune control "
            "of the same length, the paper's over the untreated model.", "",
            "| claim | selection | paper | ours (mean [95 % CI]) | verdict |",
            "|---|---|---|---|---|"]
    head += [f"| {' | '.join(r)} |" for r in claims]
    head += [f"| {claim} | – | – | – | not run: needs {needs} |" for claim, needs in missing]
    return "\n".join(head + ["", *lines]).rstrip() + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.claims",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True,
                   help="out_dir of scripts/shortcut_benchmark.sh runs (one per setting)")
    p.add_argument("--paper_table", default="scripts/paper_table1.csv",
                   help="the paper's Table 1 (model,data_name,base,all,space,channel)")
    p.add_argument("--paper_ablations", default=None,
                   help="the paper's Tables 2, 3 and Fig. 6 (study,source,model,data_name,"
                        "image_size,variant,setting,ratio,gain; default: "
                        "scripts/paper_ablations.csv beside this script)")
    p.add_argument("--results_file", default="RESULTS.md", help="section 'claims' written here")
    p.add_argument("--figures_dir", default="results_figures",
                   help="convergence curves (PNG), tracked beside RESULTS.md (results/ is ignored)")
    p.add_argument("--acc_tol", type=float, default=0.3,
                   help="converged: best test top-1 minus the last fifth's mean, in points")
    p.add_argument("--loss_tol", type=float, default=0.05,
                   help="converged: |fitted train-loss change over the last fifth| / its mean")
    p.add_argument("--robustness_json", default=None,
                   help="Fig. 3: the JSON of core/robustness.py (none: Fig. 3 is not run)")
    p.add_argument("--section", default="claims", help="section name in the results file")
    p.add_argument("--measured_on", default=None,
                   help="the commit the runs were measured on (default: the 'commit' their "
                        "config.json records, else this checkout's)")
    return p


def main(args: argparse.Namespace, argv: list[str] | None = None) -> str:
    parser = get_args_parser()
    for run in args.runs:
        if not (Path(run) / "config.json").is_file():
            parser.error(f"--runs: {run} holds no config.json (not a shortcut_benchmark out_dir)")
    if not Path(args.paper_table).is_file():
        parser.error(f"--paper_table: {args.paper_table} not found")
    args.paper_ablations = args.paper_ablations or str(PAPER_ABLATIONS)
    if not Path(args.paper_ablations).is_file():
        parser.error(f"--paper_ablations: {args.paper_ablations} not found")
    if args.robustness_json and not Path(args.robustness_json).is_file():
        parser.error(f"--robustness_json: {args.robustness_json} not found")
    figures = Path(args.figures_dir)
    results_file = Path(args.results_file)
    try:
        rel = Path(figures.resolve()).relative_to(results_file.resolve().parent)
    except ValueError:
        rel = figures.resolve()
    paper = read_paper_ablations(Path(args.paper_ablations))
    settings = {Path(r).name: analyse(Path(r), Path(args.paper_table), args.acc_tol,
                                      args.loss_tol, paper) for r in args.runs}
    text = report(settings, figures, rel, args.acc_tol, args.loss_tol,
                  Path(args.robustness_json) if args.robustness_json else None)
    argv = sys.argv[1:] if argv is None else argv
    recorded = sorted({json.loads((Path(r) / "config.json").read_text()).get("commit", "")
                       for r in args.runs} - {""})
    measured_on = args.measured_on or (", ".join(recorded) if recorded else None)
    write_section(args.section, text, shlex.join(["python", "-m", "scripts.claims", *argv]),
                  results_file, measured_on=measured_on)
    print(text)
    return text


if __name__ == "__main__":
    main(get_args_parser().parse_args())
