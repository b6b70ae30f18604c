"""Model registry: ``@register_model`` fills :data:`MODELS`; :func:`load_model` builds by name.

Every builder has the signature ``builder(num_classes, in_channels, stem)``:

* ``stem="small"`` — for 28/32 px inputs: the network the paper used, i.e. the authors'
  released CIFAR definition (same parameter count, convs and layer-0 shape; see
  ``tests/test_models.py::RELEASED``). Mostly a stride-1 3x3 first conv and no early
  max-pool, so deep layers keep a useful spatial size; some released networks differ in
  more than the stem (AlexNet's and VGG's classifiers, MobileNetV2's, ...).
* ``stem="imagenet"`` — for 96/224 px inputs: the architecture's own ImageNet form
  (strided first conv, max-pool), which keeps 224 px training affordable.

All classifiers end in adaptive pooling, so each definition serves every input size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch.nn as nn

MODELS: dict[str, Callable[..., nn.Module]] = {}
STEMS = ("small", "imagenet")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a duplicate name is an error."""
    name = fn.__name__
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = fn
    return fn


def default_stem(image_size: int | None) -> str:
    """The stem that follows the dataset: ``small`` up to 64 px, ``imagenet`` above."""
    return "small" if image_size is None or image_size <= 64 else "imagenet"


def load_model(model_name: str, in_channels: int = 3, num_classes: int = 10,
               image_size: int | None = None, stem: str | None = None) -> nn.Module:
    """Build a registered model.

    Args:
        model_name: one of ``sorted(MODELS)``.
        in_channels: image channels (1 for MNIST-like data, 3 otherwise).
        num_classes: number of output logits.
        image_size: input size in pixels; picks the stem when ``stem`` is None.
        stem: ``"small"`` or ``"imagenet"``; overrides ``image_size``.
    """
    if model_name not in MODELS:
        raise KeyError(f"unknown model {model_name!r}; valid names: {', '.join(sorted(MODELS))}")
    stem = stem or default_stem(image_size)
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be positive, got "
                         f"{num_classes} and {in_channels}")
    return MODELS[model_name](num_classes=num_classes, in_channels=in_channels, stem=stem)


def load_modules(model: nn.Module, model_layers: Sequence[int | str] | None = None
                 ) -> list[tuple[str, nn.Conv2d]]:
    """The model's ``Conv2d`` modules as ``(name, module)``, last conv first.

    ``model_layers`` selects by index into that list (``0`` = last conv, ``1`` = the one
    before, ...) or by module name (``"layer4.1.conv2"``); digit strings count as indices.
    The result follows the order of ``model_layers``.
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][::-1]
    if model_layers is None:
        return convs
    by_name = dict(convs)
    chosen = []
    for layer in model_layers:
        if isinstance(layer, str) and layer.lstrip("-").isdigit():
            layer = int(layer)
        if isinstance(layer, int):
            if not -len(convs) <= layer < len(convs):
                raise IndexError(f"conv layer index {layer} out of range: the model has "
                                 f"{len(convs)} Conv2d layers (0 = last)")
            chosen.append(convs[layer])
        elif layer in by_name:
            chosen.append((layer, by_name[layer]))
        else:
            raise KeyError(f"no Conv2d named {layer!r}; last convs are: "
                           f"{', '.join(n for n, _ in convs[:5])}, ...")
    return chosen
