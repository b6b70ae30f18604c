"""The value rules of every numeric command-line flag, in one table keyed by the flag's dest.

argparse checks the type (``--lr abc``); :func:`check_args` checks the value (``--lr nan``,
``--batch_size 0``) after parsing, so a bad value stops the run before any work with one line
naming the flag: ``train.py: error: argument --lr: must be a finite number > 0, got nan``.
:func:`utils.cli.run_main` calls it for every entry point; a dest means the same thing in every
script that has it, so one rule per dest serves them all (:data:`PARSER_RULES` holds the one
exception, ``--num_epochs``). ``None`` (an unset optional flag,
"use the dataset's default") always passes; 0 is never a stand-in for a default.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

# A rule returns None when the value is fine, else what it must be (for the message).
Rule = Callable[[object], "str | None"]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(v) -> str | None:
    return None if isinstance(v, int) and v > 0 else "must be an integer > 0"


def non_negative_int(v) -> str | None:
    return None if isinstance(v, int) and v >= 0 else "must be an integer >= 0"


def positive_float(v) -> str | None:
    return None if _finite(v) and v > 0 else "must be a finite number > 0"


def non_negative_float(v) -> str | None:
    return None if _finite(v) and v >= 0 else "must be a finite number >= 0"


def probability(v) -> str | None:
    return None if _finite(v) and 0 <= v <= 1 else "must be a number in [0, 1]"


def threshold(v) -> str | None:
    """A share ``t`` tested as ``x > t`` on values in [0, 1]: 1 or more selects nothing."""
    return None if _finite(v) and 0 <= v < 1 else "must be a number in [0, 1)"


def int_between(lo: int, hi: int) -> Rule:
    def rule(v) -> str | None:
        return None if isinstance(v, int) and lo <= v <= hi else f"must be an integer in {lo}..{hi}"
    return rule


def each(rule: Rule) -> Rule:
    """A list flag (``--deltas 0,0.1``): every item obeys ``rule``."""
    def check(values) -> str | None:
        bad = [rule(v) for v in values]
        return next((f"every value {b}" for b in bad if b), None)
    return check


def device_name(v) -> str | None:
    from utils.runtime import device_error
    return device_error(v)


def device_index(v) -> str | None:
    if v in (None, "", "None"):
        return None
    return None if str(v).isdigit() else "must be a CUDA index such as 0"


RULES: dict[str, Rule] = {
    # sizes and counts: 0 would mean "nothing" (or, before, silently "the default")
    **dict.fromkeys((
        "batch_size", "num_images", "noise_draws", "repeats", "num_overlays",
        "in_channels", "num_classes", "train_epochs", "doctor_epochs", "num_high", "num_low",
        "budget", "train_per_class", "image_size", "reps", "diag_images", "diag_batch_size",
        "mem_draws", "data_images", "data_batch_size", "released_images", "threads",
        "parallel", "cpus_per_job", "time_min", "swap_batch"), positive_int),
    # counts where 0 is a documented setting (off / all / none / the main process)
    **dict.fromkeys((
        "workers", "loader_workers", "seed", "expand_px", "replay_annotated", "replay",
        "warmup", "num_classes_subset", "val_per_class", "test_per_class", "subset_per_class",
        "per_class",
        "gpus_per_job", "loader_images", "seconds"), non_negative_int),
    # loss weights and noise ranges: 0 switches the term off, a negative one inverts it
    **dict.fromkeys((
        "alpha", "beta", "gamma", "rrr_lambda", "swap_lambda", "noise_delta", "weight_decay",
        "released_alpha", "eps"), non_negative_float),
    **dict.fromkeys(("lr", "mem_gb"), positive_float),
    "momentum": probability,
    "theta": threshold,            # mask M = Â > θ with Â in [0, 1]
    "kernel_tau": threshold,       # background share > τ, a share in [0, 1]
    "kernel_tau_excess": threshold,  # share − background area > τ (rule excess)
    "kernel_top": probability,     # fraction of kernels flagged (rule rank)
    "deltas": each(non_negative_float),
    "decoy_strength": int_between(1, 255),
    "device": device_name,
    "device_index": device_index,
}


def _epochs(parser: argparse.ArgumentParser) -> Rule:
    """0 epochs is a run where it starts from trained weights (``--ori_model_path``: epoch 0
    evaluates and saves them); from scratch it would save nothing."""
    return non_negative_int if "--ori_model_path" in parser._option_string_actions else positive_int


# Rules that depend on the entry point, chosen from its parser; they replace RULES' entry.
PARSER_RULES: dict[str, Callable[[argparse.ArgumentParser], Rule]] = {"num_epochs": _epochs}


def rule_for(parser: argparse.ArgumentParser, dest: str) -> Rule | None:
    return PARSER_RULES[dest](parser) if dest in PARSER_RULES else RULES.get(dest)


def flag_name(action: argparse.Action) -> str:
    """The flag as users write it: ``--dest`` when the action has it, else its first name."""
    wanted = "--" + action.dest
    return wanted if wanted in action.option_strings else (action.option_strings or [action.dest])[0]


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions, including those of its sub-commands."""
    actions = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += parser_actions(sub)
        else:
            actions.append(action)
    return actions


def problems(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """``argument --flag: <rule>, got <value>`` for every parsed value that breaks its rule."""
    found = []
    for action in parser_actions(parser):
        rule = rule_for(parser, action.dest)
        if rule is None or not action.option_strings or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None:
            continue
        message = rule(value)
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        text = f"argument {flag_name(action)}: {message}, got {shown}"
        if message and text not in found:   # sub-commands may share a dest
            found.append(text)
    return found


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Exit through ``parser.error`` on the first value that breaks its rule; else ``args``."""
    found = problems(parser, args)
    if found:
        parser.error(found[0])
    return args


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser.error`` (and its sub-commands') print ``prog: error: message`` alone on
    stderr, exit status 2, without the usage block: the message names the flag."""
    def error(message: str, _p=parser):
        _p.exit(2, f"{_p.prog}: error: {' '.join(str(message).split())}\n")
    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None
               ) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with one-line errors and every value checked against
    :data:`RULES`: the one parse path of the entry points."""
    one_line_errors(parser)
    return check_args(parser, parser.parse_args(argv))
