"""Every treatment variant, named once: its label, what it changes in a treatment run, and the
weight the shortcut benchmark searches for it on ``val``.

The paper's Table 1 variants are ``control``, ``channel``, ``space`` and ``all``; the others
are the shortcut benchmark's baselines and additions (``kernels_reinit_deep`` is also the
quick start's ``+Kernels`` cure). ``train_model_doctor.sh variant=<name>`` sets the weights
from here (a weight the variant does not use must be 0), the drivers (scripts/table1.py,
scripts/ablation.py, scripts/shortcut_benchmark.py, scripts/quickstart_table.py) read their
names, labels and grids from here. The shell call prints assignments::

    assign=$("$PYTHON" -m scripts.variants "$variant")   # refuses a contradiction
    eval "$assign"

This module imports nothing of the project, so that call is quick.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field

# the constraint weights of a treatment run (train_model_doctor.py flags)
WEIGHTS = ("alpha", "beta", "gamma", "rrr_lambda", "swap_lambda")
# a used weight's value when none is given (train_model_doctor.sh's)
DEFAULT_WEIGHTS = {"alpha": 0.078, "beta": 1.0, "gamma": 0.3}


@dataclass(frozen=True)
class Variant:
    """``uses``: the weights it turns on (the others are 0); ``flags``: the other settings it
    fixes (train_model_doctor.py flag -> value); ``searched``: (what the benchmark searches on
    val, the benchmark flag holding the grid), or None; ``masks``: whether it needs masks."""
    label: str
    uses: tuple[str, ...] = ()
    flags: dict = field(default_factory=dict)
    searched: tuple[str, str] | None = None

    @property
    def masks(self) -> bool:
        return bool({"beta", "gamma", "rrr_lambda", "swap_lambda"} & set(self.uses))


VARIANTS = {
    "control": Variant("Fine-tune control"),
    "channel": Variant("+Channel", ("alpha",), searched=("alpha", "alphas")),
    "space": Variant("+Space", ("beta",), searched=("beta", "betas")),
    "all": Variant("+All", ("alpha", "beta")),
    "rrr_all": Variant("RRR, masks on all images", ("rrr_lambda",),
                       searched=("RRR lambda", "rrr_lambdas")),
    "rrr_budget": Variant("RRR, annotated images only, replayed (ours)", ("rrr_lambda",),
                          searched=("RRR lambda with the annotated images",
                                    "rrr_budget_lambdas")),
    "kernels": Variant("Background kernels (ours)", ("gamma",), searched=("gamma", "gammas")),
    "kernels_reinit": Variant("Background kernels re-initialised + suppressed (ours)",
                              ("gamma",), {"kernel_reinit": True},
                              searched=("gamma with re-initialised kernels", "gammas")),
    "kernels_reinit_random": Variant("Random kernels re-initialised + suppressed (control)",
                                     ("gamma",),
                                     {"kernel_reinit": True, "kernel_reinit_random": True}),
    "kernels_reinit_deep": Variant("+Kernels re-initialised (ours, not in the paper)",
                                   ("gamma",), {"kernel_reinit": True, "kernel_layers": "-1,-2"}),
    "swap": Variant("Counterfactual background swaps, annotated images replayed (ours)",
                    ("swap_lambda",), searched=("swap lambda", "swap_lambdas")),
}
PAPER = ("control", "channel", "space", "all")              # Table 1, the ablations
LABELS = {name: v.label for name, v in VARIANTS.items()}
NEEDS_MASKS = tuple(name for name, v in VARIANTS.items() if v.masks)


def get(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def weights(name: str, **given: float) -> dict[str, float]:
    """Every weight of ``name``'s run: ``given`` (or the default) for the weights it uses,
    0 for the others."""
    uses = get(name).uses
    return {w: float(given.get(w, DEFAULT_WEIGHTS.get(w, 0.0))) if w in uses else 0.0
            for w in WEIGHTS}


def variant_weights(name: str, alpha: float, beta: float) -> tuple[float, float]:
    """``(alpha, beta)`` of a paper variant: the weights of the constraints it uses, else 0."""
    w = weights(name, alpha=alpha, beta=beta)
    return w["alpha"], w["beta"]


def shell_assignments(name: str, env: dict[str, str]) -> str:
    """``weight=value`` and flag lines for train_model_doctor.sh. A non-zero weight the
    variant does not use, or a flag given another value, is a ValueError."""
    variant = get(name)
    lines = {}
    for w in ("alpha", "beta", "gamma"):
        value = env.get(w, "")
        if w in variant.uses:
            lines[w] = value or str(DEFAULT_WEIGHTS[w])
        elif value and float(value) != 0:
            raise ValueError(f"variant={name} uses {', '.join(variant.uses) or 'no weight'}, "
                             f"but {w}={value}: unset {w} or choose another variant")
        else:
            lines[w] = "0"
    if {"rrr_lambda", "swap_lambda"} & set(variant.uses):
        raise ValueError(f"variant={name} is run by scripts/shortcut_benchmark.sh, not here")
    for flag, value in variant.flags.items():
        shell = "1" if value is True else str(value)
        if flag not in ("kernel_reinit", "kernel_layers"):
            raise ValueError(f"variant={name} is run by scripts/shortcut_benchmark.sh, not here")
        if env.get(flag, "") not in ("", shell):
            raise ValueError(f"variant={name} sets {flag}={shell}, but {flag}={env[flag]}: "
                             f"unset {flag} or choose another variant")
        lines[flag] = shell
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in lines.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print a variant's weights as shell assignments "
                                            "(alpha=..., beta=..., gamma=...), read from the "
                                            "environment where given.")
    p.add_argument("variant", help=f"one of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(shell_assignments(args.variant, dict(os.environ)))
    except ValueError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
