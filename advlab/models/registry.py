"""The model registry: name -> constructor. `build_model("seed_cnn")`, or `model=seed_cnn` from Hydra."""

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model.name: unknown name {name!r}; registered models are {sorted(MODELS)}")
    return MODELS[name](**kwargs)
