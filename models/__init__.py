"""CNN classifiers, one file per architecture family, all registered in :data:`MODELS`."""
from models.registry import MODELS, STEMS, default_stem, load_model, load_modules, register_model

# Importing the architecture modules registers their builders.
from models import (  # noqa: F401,E402
    alexnet, densenet, efficientnet, googlenet, inception, mnasnet, mobilenet, resnet,
    shufflenet, simplenet, smallcnn, squeezenet, vgg, xception,
)

__all__ = ["MODELS", "STEMS", "default_stem", "load_model", "load_modules", "register_model"]
