"""Model registry: `build_model("seed_cnn")`, or `model=seed_cnn` from Hydra.

Every registered model takes images in [0, 1] and returns logits or
log-probabilities over the classes; normalisation is a layer inside it.
"""

from collections.abc import Callable

from torch import nn

from advlab.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from advlab.models.seed_cnn import SeedCNN

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model: unknown name {name!r}; registered models are {sorted(MODELS)}")
    return MODELS[name](**kwargs)


register("seed_cnn", SeedCNN)

__all__ = ["MODELS", "register", "build_model", "SeedCNN", "Normalize", "CIFAR10_MEAN", "CIFAR10_STD"]
