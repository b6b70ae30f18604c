"""The treatment's terms by name, and the ones the command line asks for.

``TERMS`` maps a term's name to its builder, ``builder(args, model, stats, annotated) ->
Term | None`` (``None`` when the flags leave it off, e.g. its weight is 0). Adding a term
is one file with a :class:`core.grad_constraint.Term` subclass and one line here.
"""
from __future__ import annotations

from typing import Callable

from core.counterfactual import CounterfactualTerm
from core.grad_constraint import ChannelTerm, SpatialTerm, Term
from core.kernels import KernelTerm
from core.right_reasons import RightReasonsTerm

TermBuilder = Callable[..., "Term | None"]

# the order is the order of the hooks, the gradients and the sum
TERMS: dict[str, TermBuilder] = {
    "channel": ChannelTerm.from_args,
    "spatial": SpatialTerm.from_args,
    "kernel": KernelTerm.from_args,
    "right_reasons": RightReasonsTerm.from_args,
    "swap": CounterfactualTerm.from_args,
}


def register_term(name: str, builder: TermBuilder) -> TermBuilder:
    """Add ``builder`` to :data:`TERMS` under ``name`` (refused if the name is taken)."""
    if name in TERMS:
        raise ValueError(f"a term called {name!r} is already registered: {sorted(TERMS)}")
    TERMS[name] = builder
    return builder


def build_terms(args, model, stats=None, annotated=None) -> list[Term]:
    """The active terms (weight > 0) for the parsed flags of ``train_model_doctor.py``.

    Args:
        args: the parsed flags (``alpha`` already on the batch-mean scale).
        model: the classifier being treated.
        stats: its channel statistics (needed by the channel term).
        annotated: ``(images, labels, masks)`` of the annotated training images (needed by
            the background-kernel term).
    """
    terms = [build(args, model, stats, annotated) for build in TERMS.values()]
    return [t for t in terms if t is not None and t.weight > 0]
