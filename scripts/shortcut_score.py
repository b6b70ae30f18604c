"""The shortcut benchmark's scores, from the rows of a ``shortcut.json``
(:mod:`scripts.shortcut_benchmark`): per model the mean ± std over seeds; per treatment the
paired difference to the fine-tune control with its 95 % t-interval, the share of the gap and
whether it meets the cure's goal; the check that the clean-trained reference is a fair
yardstick; and the markdown of the benchmark's table. :mod:`scripts.suite` reads the same."""
from __future__ import annotations

import statistics

from scripts.claims import paired
from scripts.variants import VARIANTS


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation in percent (0 for one value)."""
    values = [100 * v for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# The cure's goal, stated under every table: on the random-decoy test, at least this share of
# the gap, as a mean over at least GOAL_SEEDS seeds, at least RRR with every mask, and a
# decoy-free accuracy not below the untreated model's.
GOAL_SHARE = 0.90
GOAL_SEEDS = 3
# the clean-trained reference is an honest yardstick when the decoy moves it at most this much
YARDSTICK_POINTS = 3.0
NOT_TREATMENTS = ("clean", "untreated")


def goal_text() -> str:
    return (f"≥ {100 * GOAL_SHARE:.0f} % of the gap over ≥ {GOAL_SEEDS} seeds, a random-decoy "
            f"test top-1 at least RRR's with every mask, a decoy-free test top-1 not below the "
            f"untreated model's (means over seeds)")


def points(rows: dict[str, list[dict]], key: str, metric: str) -> list[float]:
    return [100 * r[metric] for r in rows[key]]


def interval(values: list[float]) -> dict:
    """Mean and 95 % t-interval (:func:`scripts.claims.paired`; low/high None below 2)."""
    p = paired(values)
    return {"mean": p.mean, "low": p.low, "high": p.high, "n": p.n, "per_seed": list(values)}


def gap_shares(rows: dict[str, list[dict]], key: str) -> list[float] | None:
    """Per seed, the share of that seed's gap (clean-trained reference minus untreated decoy
    model on the random-decoy test) that ``key`` recovers; None when a seed has no gap."""
    clean, base = points(rows, "clean", "test"), points(rows, "untreated", "test")
    if any(c - b <= 0 for c, b in zip(clean, base)):
        return None
    return [(t - b) / (c - b) for t, b, c in zip(points(rows, key, "test"), base, clean)]


def yardstick(rows: dict[str, list[dict]]) -> dict | None:
    """The clean-trained reference on the random-decoy test against the decoy-free test
    (means over seeds, points); it passes within :data:`YARDSTICK_POINTS`."""
    if "clean" not in rows:
        return None
    decoy_test = statistics.mean(points(rows, "clean", "test"))
    free_test = statistics.mean(points(rows, "clean", "clean_test"))
    return {"decoy_test": decoy_test, "decoy_free_test": free_test,
            "difference": decoy_test - free_test,
            "passes": abs(decoy_test - free_test) <= YARDSTICK_POINTS}


def goal_failures(entry: dict, scored: dict[str, dict]) -> list[str]:
    """The criteria of the cure's goal that the treatment ``entry`` misses (empty: met)."""
    failed = []
    if entry["seeds"] < GOAL_SEEDS:
        failed.append(f"{entry['seeds']} seed{'s' * (entry['seeds'] != 1)} < {GOAL_SEEDS}")
    share = entry.get("share")
    if share is None:
        failed.append("no gap in a seed")
    elif share["mean"] < GOAL_SHARE:
        failed.append(f"share < {100 * GOAL_SHARE:.0f} %")
    if "rrr_all" not in scored:
        failed.append("RRR not run")
    elif entry["test"][0] < scored["rrr_all"]["test"][0]:
        failed.append("below RRR")
    if entry["clean_test"][0] < scored["untreated"]["clean_test"][0]:
        failed.append("decoy-free below untreated")
    return failed


def score(rows: dict[str, list[dict]]) -> dict:
    """The numbers of the benchmark table from ``rows`` (``shortcut.json``'s: per model, one
    dict of accuracies as fractions per seed, every model in the same seed order).

    Per model, in points: ``test`` (random-decoy test), ``val``, ``clean_test`` (decoy-free
    test) and, where recorded, ``worst_group`` as (mean, std) over seeds. Per treatment:
    ``vs_control``, the paired per-seed difference of the test top-1 to the fine-tune
    control (mean and 95 % t-interval); with a clean-trained reference ``share``, the mean
    over seeds of the per-seed share of the gap (None when a seed has no gap), and ``goal``:
    the criteria it misses (:func:`goal_failures`).
    """
    seeds = len(rows["untreated"])
    uneven = sorted(k for k, v in rows.items() if len(v) != seeds)
    if uneven:
        raise ValueError(f"{', '.join(uneven)}: not one result per seed ({seeds} seeds)")
    scored = {}
    for key, per_seed in rows.items():
        entry = {"seeds": seeds, **{m: mean_std([r[m] for r in per_seed])
                                    for m in ("test", "val", "clean_test")}}
        if all("worst_group" in r for r in per_seed):
            entry["worst_group"] = mean_std([r["worst_group"] for r in per_seed])
        scored[key] = entry
    for key, entry in scored.items():
        if key in NOT_TREATMENTS:
            continue
        if "control" in rows and key != "control":
            entry["vs_control"] = interval([t - c for t, c in zip(
                points(rows, key, "test"), points(rows, "control", "test"))])
        if "clean" in rows:
            shares = gap_shares(rows, key)
            entry["share"] = interval(shares) if shares is not None else None
            entry["goal"] = goal_failures(entry, scored)
    return scored


def summarize(rows: dict[str, list[dict]]) -> dict:
    """``shortcut.json``'s ``score``: :func:`score` of every model (table order), the
    :func:`yardstick` check and the goal's thresholds."""
    order = [k for k in ("clean", "untreated", *VARIANTS) if k in rows]
    return {"models": score({k: rows[k] for k in order}), "yardstick": yardstick(rows),
            "goal": {"share": GOAL_SHARE, "seeds": GOAL_SEEDS}}


def fmt_interval(iv: dict | None, scale: float = 1.0, unit: str = "", sign: bool = True) -> str:
    """``+3.2 [+1.0, +5.4]`` (no interval below 2 seeds); empty for None."""
    if iv is None:
        return ""
    f = "{:+.1f}" if sign else "{:.0f}"
    text = f.format(scale * iv["mean"]) + unit
    if iv["low"] is not None:
        text += f" [{f.format(scale * iv['low'])}, {f.format(scale * iv['high'])}]"
    return text


def table_lines(scored: dict[str, dict], label, has_clean: bool) -> list[str]:
    """The benchmark table (markdown lines) of :func:`score`'s output; ``label(key)`` names a
    row."""
    worst = any("worst_group" in e for e in scored.values())
    test = "random-decoy test" if has_clean else "test"
    head = [f"{test} top-1", "decoy-free test top-1"]
    head += ["worst group, random-decoy test"] if worst else []
    head += ["share of the gap [95 % CI]", "meets the goal"] if has_clean else []
    head += ["vs control, paired [95 % CI]", "val top-1"]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for key, e in scored.items():
        cells = [f"{e['test'][0]:.1f} ± {e['test'][1]:.1f}",
                 f"{e['clean_test'][0]:.1f} ± {e['clean_test'][1]:.1f}"]
        if worst:
            w = e.get("worst_group")
            cells.append(f"{w[0]:.1f} ± {w[1]:.1f}" if w else "")
        if has_clean:
            treated = key not in NOT_TREATMENTS
            share = e.get("share")
            cells.append(fmt_interval(share, 100, " %", sign=False) if share else
                         "no gap in a seed" if treated else "")
            cells.append(goal_cell(e.get("goal")))
        cells += [fmt_interval(e.get("vs_control")), f"{e['val'][0]:.1f} ± {e['val'][1]:.1f}"]
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    return lines


def goal_cell(failed: list[str] | None) -> str:
    """``yes``, ``no: <the criteria missed>``, or empty (not a treatment)."""
    if failed is None:
        return ""
    return "no: " + ", ".join(failed) if failed else "yes"


def yardstick_line(check: dict) -> str:
    verdict = "passes" if check["passes"] else "FAILS"
    return (f"Yardstick check {verdict}: the clean-trained reference scores "
            f"{check['decoy_test']:.1f} on the random-decoy test and "
            f"{check['decoy_free_test']:.1f} on the decoy-free test "
            f"({check['difference']:+.1f} points; within {YARDSTICK_POINTS:g} needed for the "
            f"gap to be an honest yardstick).")
