"""Building a model from its config: a registered name, or any importable nn.Module through `_target_`.

    build_model("seed_cnn")                                        # the registry (model=seed_cnn)
    build_model(name="wide_resnet", depth=28, widen_factor=10)
    build_model(_target_="torchvision.models.resnet18", num_classes=10,
                normalization={"mean": [...], "std": [...]})       # any nn.Module (model=torchvision_resnet18)

Both forms go through `build_model`, and every model config spells what input the model expects the
same way: `normalization` ({mean, std}, or null when the model normalises itself), so every model takes
images in [0, 1]. A registered model with a normalisation layer of its own (its constructor takes
`normalize`, `mean`, `std`) gets them from it; any other model gets advlab.models.adapter.AdaptedModel in
front; a `_target_` model is always adapted, so a tuple or dict output becomes logits.
"""

import inspect
from collections.abc import Callable, Iterator, Mapping

from torch import nn

from advlab.errors import UserError
from advlab.models.adapter import adapt, parse_normalization

MODELS: dict[str, Callable[..., nn.Module]] = {}

# Targets a checkpoint file may name to rebuild its model without the user naming them too.
TRUSTED_TARGET_PREFIXES = ("advlab.", "torchvision.models.", "timm.")


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def build_model(name: str | None = None, /, **spec) -> nn.Module:
    """The model a config describes: {name: ..., args} (the registry) or {_target_: ..., args}."""
    if name is not None:
        spec = {"name": name, **spec}
    spec_keys = set(spec)
    normalization = spec.pop("normalization", None)
    if "_target_" in spec:
        return adapt(_instantiate(spec), normalization)
    if "name" not in spec:
        raise UserError(f"model: give `name:` (a registered model: {', '.join(sorted(MODELS))}) or `_target_:` "
                        f"(any importable nn.Module class or function), got keys {sorted(spec)}")
    name = spec.pop("name")
    if name not in MODELS:
        raise UserError(f"model.name: unknown name {name!r}; registered models are {sorted(MODELS)} "
                        "(or give model._target_: any importable nn.Module)")
    factory = MODELS[name]
    if "normalization" in spec_keys and _normalises_itself(factory):
        # The model's own layer (its state_dict keeps mean and std). Statistics still unknown (data=npz without
        # training images) leave the model's defaults, CIFAR-10's, as they always have.
        if normalization is None:
            return factory(**spec, normalize=False)
        if _unknown(normalization):
            return factory(**spec, normalize=True)
        mean, std = parse_normalization(normalization)
        return factory(**spec, normalize=True, mean=mean, std=std)
    model = factory(**spec)
    return model if normalization is None else adapt(model, normalization)


def _unknown(normalization) -> bool:
    """{mean: null, std: null}: the data's statistics, not known (yet)."""
    return isinstance(normalization, Mapping) and normalization.get("mean") is None and normalization.get("std") is None


def _normalises_itself(factory: Callable) -> bool:
    """Whether a registered model has its own normalisation layer (takes normalize, mean and std)."""
    return {"normalize", "mean", "std"} <= set(inspect.signature(factory).parameters)


def _instantiate(spec: dict) -> nn.Module:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        model = instantiate(dict(spec), _convert_="all")
    except InstantiationException as error:  # Hydra wraps the constructor's own error: pass that on
        if isinstance(error.__cause__, UserError):  # it names the key already
            raise type(error.__cause__)(str(error.__cause__)) from error
        raise UserError(f"model._target_: cannot build {spec['_target_']!r}: {error.__cause__ or error}") from error
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_: {spec['_target_']!r} returned {type(model).__name__}, not an nn.Module")
    return model


def targets(spec) -> Iterator[str]:
    """Every `_target_` in a model config, nested ones included."""
    if isinstance(spec, Mapping):
        if "_target_" in spec:
            yield str(spec["_target_"])
        for value in spec.values():
            yield from targets(value)
    elif isinstance(spec, (list, tuple)):
        for value in spec:
            yield from targets(value)


def check_target(target: str) -> None:
    """Refuse a `_target_` that cannot be imported, before any work."""
    from hydra.utils import get_object

    try:
        get_object(target)
    except Exception as error:  # noqa: BLE001 - ImportError, AttributeError, ...: the user's path is wrong
        raise UserError(f"model._target_: cannot import {target!r} ({error})") from error


def check_file_targets(spec: Mapping, trusted: set[str] = frozenset(), source: str = "the checkpoint") -> None:
    """A model config read from a file may only name targets that build models.

    Loading with weights_only runs no code from the file; a `_target_` in it would call whatever it
    names. Allowed: advlab's, torchvision.models' and timm's, nn.Module classes, and the targets in
    `trusted` (those the user's own config names)."""
    from hydra.utils import get_object

    for target in targets(spec):
        if target in trusted or target.startswith(TRUSTED_TARGET_PREFIXES):
            continue
        try:
            obj = get_object(target)
        except Exception as error:  # noqa: BLE001
            raise UserError(f"{source} names model._target_ {target!r}, which cannot be imported ({error})") from error
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise UserError(f"{source} names model._target_ {target!r}, which is not an nn.Module class: advlab "
                            f"calls it only when your config names it too (model._target_={target})")
