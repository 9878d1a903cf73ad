"""Any nn.Module as an advlab model: images in [0, 1] in, logits out.

advlab's attacks work in pixel space on [0, 1] images and read logits. A model from elsewhere
(torchvision, timm, a user's own) may expect normalised inputs, and may return a tuple
(first element: the logits) or a dict / ModelOutput with "logits". `adapt` puts both right
in one wrapper, used by the model builder (`_target_` models) and by advlab.evaluate alike.

    adapt(model, normalization={"mean": [...], "std": [...]})   # or (mean, std), or None

The wrapper's normalisation is set by the config, not learned: its mean and std are not in
its state_dict, which is the wrapped model's under the prefix "model.". `unwrap` gives the
model inside (whose state_dict a user's own code can load as it is).
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from advlab.models.normalize import Normalize


def parse_normalization(normalization) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """None, {"mean": [...], "std": [...]} or (mean, std) -> (mean, std) or None, checked."""
    if normalization is None:
        return None
    if isinstance(normalization, Mapping):
        unknown = set(normalization) - {"mean", "std"}
        if unknown or not {"mean", "std"} <= set(normalization):
            raise ValueError(f"model.normalization: expected {{mean: [...], std: [...]}} or null (the model "
                             f"normalises itself), got keys {sorted(normalization)}")
        mean, std = normalization["mean"], normalization["std"]
    elif isinstance(normalization, Sequence) and not isinstance(normalization, str) and len(normalization) == 2:
        mean, std = normalization
    else:
        raise ValueError(f"model.normalization: expected {{mean: [...], std: [...]}}, (mean, std) or null, "
                         f"got {normalization!r}")
    try:
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.normalization: mean and std must be lists of numbers, got {mean!r}, {std!r}") from err
    if len(mean) != len(std) or not mean:
        raise ValueError(f"model.normalization: mean and std must have one value per channel, got {len(mean)} "
                         f"and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"model.normalization: std must be positive in every channel, got {std}")
    return mean, std


def logits_of(output):
    """The logits in a model's output: the tensor itself, a tuple's first element, a dict's "logits"."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):  # dicts, and transformers' ModelOutput (an OrderedDict)
        if "logits" not in output:
            raise TypeError(f"the model returned a dict without 'logits' (keys: {sorted(output)}); advlab needs logits")
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # (logits, aux, ...), torchvision's namedtuples (GoogLeNet, Inception in training)
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError(f"the model returned {type(output).__name__}; advlab needs logits: a tensor, a tuple whose "
                    "first element is the logits, or a dict with 'logits'")


class AdaptedModel(nn.Module):
    """model(normalize(x)) as logits; normalize is skipped when the model normalises itself."""

    def __init__(self, model: nn.Module, normalization=None):
        super().__init__()
        stats = parse_normalization(normalization)
        self.model = model
        # From the config, not the weights: mean and std are kept out of the state_dict.
        self.normalize = None if stats is None else Normalize(*stats, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x if self.normalize is None else self.normalize(x)))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        if self.normalize is None:
            return None
        return tuple(self.normalize.mean.flatten().tolist()), tuple(self.normalize.std.flatten().tolist())

    def __getattr__(self, name: str):
        # A model's own hooks (lipschitz_constant, extra_loss) stay visible through the wrapper when the
        # wrapper does nothing to the input; with a normalisation in front they would not hold as they are.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "normalize") or name.startswith("_") or self._modules.get("normalize") is not None:
                raise
            return getattr(self._modules["model"], name)


def adapt(model: nn.Module, normalization=None) -> nn.Module:
    """`model` as an advlab model (AdaptedModel), normalisation declared once; an adapted model is kept as it is."""
    if isinstance(model, AdaptedModel) and normalization is None:
        return model
    device = next(iter(model.parameters()), torch.empty(0)).device
    return AdaptedModel(model, normalization).to(device)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside the wrappers advlab adds (AdaptedModel, torch.compile)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (model.model if isinstance(model, AdaptedModel) else None)
        if inner is None:
            return model
        model = inner
