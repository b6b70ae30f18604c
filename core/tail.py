"""Re-run only the tail: split a model at a conv so that J noisy copies of its output cost
one head pass on B images plus one tail pass on J·B copies (paper Eq. 4; README: Method).

``head(x) -> (m, *live)`` runs what the conv output ``m`` depends on, plus every other value
the rest of the network reads (residual inputs, the input of a skip, ...), once on the B
images. ``tail(z, *live) -> logits`` runs the rest on ``z = m.repeat(J) + σ`` with the live
tensors repeated J times along the batch. Both are ``torch.fx`` graph modules that call the
model's own submodules: they share its parameters, buffers, train/eval state and hooks.

A model ``torch.fx`` cannot trace (Python control flow on tensor values, ...), a conv called
more than once, or a split crossed by a value that is not a ``[B, ...]`` tensor makes
:func:`split_or_none` return ``None`` (reason logged once, kept by :func:`split_reason`);
callers then run the whole network on J·B copies of the images, as before.
"""
from __future__ import annotations

import logging
import operator
import weakref

import torch
import torch.fx as fx
import torch.nn as nn

from core.hooks import feature_noise
from models import load_modules

logger = logging.getLogger(__name__)

# Values that describe a tensor's shape, not its contents. Crossing the split they are
# recomputed in the tail from the (repeated) tensor they read, so a batch size read there is
# J·B — what a reshape of the J·B copies needs.
_SHAPE_QUERIES = {"size", "dim", "ndimension", "numel"}
_META_ATTRS = {"shape", "ndim", "dtype", "device"}
_INPLACE_OPS = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
                operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior}


class SplitError(ValueError):
    """The model cannot be split at this layer; the message says why."""


class TailSplit:
    """``model`` cut right after the ``Conv2d`` named ``layer`` (module name).

    The split follows the model's train/eval state at construction (``torch.fx`` bakes
    Python checks of ``self.training`` into the graph): :func:`split_or_none` keys its
    cache on that state.

    Attributes:
        head_module / tail_module: the two ``fx.GraphModule`` halves.
        live: names of the head values the tail reads besides ``m``.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.layer = layer
        _check_no_traced_hooks(model)
        try:
            graph = fx.symbolic_trace(model).graph
        except Exception as e:   # any tracing failure means "run the whole model"
            raise SplitError(f"torch.fx cannot trace {type(model).__name__}: "
                             f"{type(e).__name__}: {e}") from e
        nodes = list(graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise SplitError(f"forward takes {len(inputs)} inputs, the split needs exactly 1")
        convs = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(convs) != 1:
            raise SplitError(f"{layer!r} is called {len(convs)} times in the traced forward "
                             f"(the split needs exactly 1)")
        conv, output = convs[0], nodes[-1]
        after = _closure([conv], lambda n: n.users) - {conv}
        if output not in after:
            raise SplitError(f"the output does not depend on {layer!r}")

        depends_on_input = _closure(inputs, lambda n: n.users)
        recompute: set[fx.Node] = set()   # head values rebuilt in the tail: constants, sizes
        live: list[fx.Node] = []

        def cross(node: fx.Node) -> None:
            if node is conv or node in after or node in recompute or node in live:
                return
            if node not in depends_on_input or _is_meta(node):
                recompute.add(node)
                for parent in node.all_input_nodes:
                    cross(parent)
            else:
                live.append(node)

        for node in after:
            for parent in node.all_input_nodes:
                cross(parent)
        order = {n: i for i, n in enumerate(nodes)}
        live.sort(key=order.__getitem__)
        head = _closure([conv, *live], lambda n: n.all_input_nodes)
        # The head runs whole before the tail: a head op after the conv that mutates a live
        # value would be seen by tail ops that read it before the mutation.
        late = [n for n in head if order[n] > order[conv] and _is_inplace(n)
                and n.args and n.args[0] in live]
        if late:
            raise SplitError(f"in-place op {late[0].name} mutates {late[0].args[0].name}, "
                             f"which crosses the split, after {layer!r}")

        self.live = [n.name for n in live]
        self.head_module = _build(model, nodes, head, [inputs[0]], [conv, *live], "Head")
        self.tail_module = _build(model, nodes, after | recompute, [conv, *live], [output],
                                  "Tail", single_output=True)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``x`` ``[B, ...]`` -> ``(m [B, K, H, W], live tensors [B, ...])``.

        Raises :class:`SplitError` if a live value is not a tensor with batch dim ``B``.
        """
        m, *live = self.head_module(x)
        for name, value in zip(self.live, live):
            if not (isinstance(value, torch.Tensor) and value.dim() > 0
                    and value.shape[0] == x.shape[0]):
                what = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise SplitError(f"{name} crosses the split but is not a [B, ...] tensor "
                                 f"(B = {x.shape[0]}, got {what})")
        return m, tuple(live)

    def tail(self, z: torch.Tensor, live: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The logits of the network run on from ``z`` (any batch, ``live`` matching it)."""
        return self.tail_module(z, *live)

    def noisy_forward(self, images: torch.Tensor, draws: int, delta: float,
                      head_grad: bool = True, noise: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[J·B, C]`` of the J noisy copies and the maps ``z`` ``[J·B, K, H, W]``
        they were run from, draw-major (copy ``j`` of image ``b`` is row ``j·B + b``).

        ``σ`` is one ``[J·B, K, H, W]`` draw of :func:`core.hooks.feature_noise` (none if
        ``δ = 0``), as :class:`core.hooks.FeatureHooks` draws it on J·B copies of the
        images; ``noise`` replaces it. With ``head_grad=False`` the head runs
        without autograd, and ``z`` is a leaf.
        """
        with torch.set_grad_enabled(head_grad and torch.is_grad_enabled()):
            m, live = self.head(images)
        return self.noisy_tail(m, live, draws, delta, noise)

    def noisy_tail(self, m: torch.Tensor, live: tuple[torch.Tensor, ...], draws: int,
                   delta: float, noise: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`noisy_forward` from a head output ``(m, live)`` already computed (the
        training forward can share it with the noisy draws)."""
        shape = (draws * m.shape[0], *m.shape[1:])
        if noise is None and delta > 0:   # σ + m by broadcasting: no J-fold copy of m
            noise = feature_noise(shape, delta, dtype=m.dtype, device=m.device)
            z = noise.view(draws, *m.shape).add_(m).view(shape)
        elif noise is not None:
            z = (noise.view(draws, *m.shape) + m).view(shape)
        else:
            z = m.repeat(draws, 1, 1, 1)
        if not z.requires_grad and torch.is_grad_enabled():
            z.requires_grad_(True)
        live = tuple(v.repeat(draws, *([1] * (v.dim() - 1))) for v in live)
        return self.tail(z, live), z


def _closure(start, step) -> set[fx.Node]:
    """``start`` and every node reachable from it by ``step`` (users or inputs)."""
    seen, todo = set(start), list(start)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _is_meta(node: fx.Node) -> bool:
    """Does ``node`` hold only shape information (sizes and arithmetic on them)?"""
    if node.op == "call_method" and node.target in _SHAPE_QUERIES:
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _META_ATTRS
    if node.op == "call_function" and getattr(node.target, "__module__", None) in (
            "_operator", "operator"):
        parents = node.all_input_nodes
        return bool(parents) and all(_is_meta(p) for p in parents)
    return False


def _is_inplace(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _INPLACE_OPS or node.kwargs.get("inplace", False) is True
    return node.op == "call_method" and node.target.endswith("_") \
        and not node.target.startswith("_")


def _build(model: nn.Module, nodes: list[fx.Node], keep: set[fx.Node],
           inputs: list[fx.Node], outputs: list[fx.Node], name: str,
           single_output: bool = False) -> fx.GraphModule:
    """A graph module over ``model`` taking ``inputs`` and computing ``outputs`` from the
    ``keep`` nodes, in the traced order."""
    graph = fx.Graph()
    env = {n: graph.placeholder(n.name) for n in inputs}
    for node in nodes:
        if node in keep and node not in env and node.op not in ("placeholder", "output"):
            env[node] = graph.node_copy(node, env.__getitem__)
    if single_output:
        (out,) = outputs
        graph.node_copy(out, env.__getitem__)     # the model's own output node
    else:
        graph.output(tuple(env[n] for n in outputs))
    graph.lint()
    return fx.GraphModule(model, graph, class_name=name)


def _check_no_traced_hooks(model: nn.Module) -> None:
    """Tracing runs non-leaf modules' hooks on proxies and would bake them into the graph."""
    tracer = fx.Tracer()
    for name, module in model.named_modules():
        if tracer.is_leaf_module(module, name):
            continue
        if module._forward_hooks or module._forward_pre_hooks:
            raise SplitError(f"module {name or type(model).__name__!r} has forward hooks, "
                             f"which tracing would bake into the graph")


# -- cache -----------------------------------------------------------------------------------
_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _state(model: nn.Module) -> tuple:
    """What a traced split depends on besides weights: which submodules, in which mode."""
    return tuple((id(m), m.training) for m in model.modules())


def split_or_none(model: nn.Module, layer: int | str) -> TailSplit | None:
    """The cached :class:`TailSplit` of ``model`` at ``layer`` (name or index, see
    :func:`models.load_modules`), or ``None`` if it cannot be split there.

    The cache holds the model weakly and is keyed on the layer and on the identity and
    train/eval state of every submodule, so swapping a submodule or calling ``.train()``
    gives a fresh split.
    """
    name = load_modules(model, [layer])[0][0]
    entries = _CACHE.setdefault(model, {})
    key = (name, _state(model))
    if key not in entries:
        try:
            entries[key] = TailSplit(model, name)
        except SplitError as e:
            _unsupported(model, name, key, e)
    found = entries[key]
    return found if isinstance(found, TailSplit) else None


def split_reason(model: nn.Module, layer: int | str) -> str | None:
    """Why ``model`` is not split at ``layer`` in its current state (``None`` if it is, or
    if no split was attempted)."""
    name = load_modules(model, [layer])[0][0]
    found = _CACHE.get(model, {}).get((name, _state(model)))
    return found if isinstance(found, str) else None


def _unsupported(model: nn.Module, name: str, key: tuple, error: Exception) -> None:
    _CACHE.setdefault(model, {})[key] = str(error)
    logger.warning("no tail split of %s at %r (%s): the noisy passes run the whole network "
                   "on J·B copies", type(model).__name__, name, error)


def noisy_forward(model: nn.Module, layer: int | str, images: torch.Tensor, draws: int,
                  delta: float, head_grad: bool = True, noise: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:meth:`TailSplit.noisy_forward` of the cached split of ``model`` at ``layer``, or
    ``None`` if there is none (the caller falls back to running the whole network)."""
    split = split_or_none(model, layer)
    if split is None:
        return None
    try:
        return split.noisy_forward(images, draws, delta, head_grad, noise)
    except SplitError as e:      # raised by the head, before any noise is drawn
        _unsupported(model, split.layer, (split.layer, _state(model)), e)
        return None
