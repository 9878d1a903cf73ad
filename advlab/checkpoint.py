"""Model files: advlab's own, and the weights files of other tools, read safely in one place.

advlab's model.pt is a dict of tensors and plain values, saved with torch.save and loaded with
weights_only=True, so loading never runs code from the file. It holds the model's config (a
registry name, or a `_target_`, with its arguments), so `load(path)` rebuilds it.

`load(path, model=config)` also reads files that hold weights only, into the model the config
describes. `read_weights` tells the formats apart (by content, not by name):

- advlab's model.pt (format "advlab-checkpoint-v1"): the model's config and its state_dict;
- a state_dict saved with torch.save (.pt/.pth), or a dict holding one under "state_dict";
- a .safetensors file (the safetensors package);
- a Lightning .ckpt of an advlab run (checkpoints/last.ckpt): its state_dict's "model." entries, and
  the model's config from its hyperparameters (runs that saved it).

Every torch file is read with weights_only=True (a Lightning checkpoint of an advlab run holds
tensors and plain values only: its loops, callbacks, optimizer and RNG states). A file that is
none of these, or whose weights do not fit the model, is refused with what was expected and
what was found.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advlab.errors import UserError, UserFileError
from advlab.io import atomic_path
from advlab.models import build_model
from advlab.models.adapter import unwrap
from advlab.models.registry import check_file_targets, targets

FORMAT = "advlab-checkpoint-v1"
EXPECTED = ("advlab's model.pt, a state_dict saved with torch.save (.pt/.pth), a .safetensors file, "
            "or a Lightning .ckpt of an advlab run")
# checkpoint=pretrained: the model's own weights, loaded by its config (model=robustbench, timm's pretrained: true).
PRETRAINED = "pretrained"
# Prefixes that wrappers add to state_dict keys: DataParallel/DDP, a LightningModule or AdaptedModel, torch.compile.
PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass
class Weights:
    """What a model file holds: its kind, the weights, and (advlab's model.pt) the model's config."""

    kind: str  # "advlab" | "state_dict" | "safetensors" | "lightning"
    state_dict: dict[str, torch.Tensor]
    model: dict | None = None  # the model's config, when the file records it
    metadata: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return {"advlab": "an advlab model.pt", "state_dict": "a state_dict", "safetensors": "a .safetensors file",
                "lightning": "a Lightning checkpoint"}[self.kind]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_args: dict, metadata: dict | None = None):
    """model_args: what build_model takes (name= or _target_=, plus arguments); metadata: plain values only."""
    payload = {
        "format": FORMAT,
        "model": dict(model_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000


def _describe(payload) -> str:
    if isinstance(payload, dict):
        keys = list(payload)
        tensors = sum(isinstance(v, torch.Tensor) for v in payload.values())
        shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"a dict with keys {shown} ({tensors} of its {len(keys)} values are tensors)"
    return f"a {type(payload).__name__}"


def _tensor_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def read_weights(path: str | os.PathLike, map_location="cpu") -> Weights:
    """The weights in a model file, whichever of the formats it is in (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserFileError(f"checkpoint: no file at {path}")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise UserError(f"checkpoint: {path} is a .safetensors file: pip install safetensors") from error
        try:
            return Weights("safetensors", load_file(path, device=str(map_location)))
        except Exception as error:  # noqa: BLE001 - a truncated or corrupt file
            raise UserError(f"checkpoint: {path} looks like a .safetensors file but cannot be read ({error})") from error
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling refusal or corruption
        refusal = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))  # torch's reason, after its advice
        found = (f"it holds objects other than tensors and plain values: {refusal.group(1).strip()}" if refusal
                 else f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}")
        raise UserError(f"checkpoint: {path} is not a readable checkpoint: torch.load(weights_only=True) refused it "
                        f"({found}); advlab reads {EXPECTED}") from error
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if not (isinstance(payload.get("model"), dict) and _tensor_dict(payload.get("state_dict"))):
            raise UserError(f"checkpoint: {path} says it is an advlab checkpoint but holds {_describe(payload)}")
        return Weights("advlab", payload["state_dict"], payload["model"], payload.get("metadata") or {})
    if isinstance(payload, dict) and "pytorch-lightning_version" in payload and isinstance(payload.get("state_dict"),
                                                                                         dict):
        model = {k[len("model."):]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
        if not model:
            raise UserError(f"checkpoint: {path} is a Lightning checkpoint without 'model.' weights (not an advlab "
                            f"run's; its state_dict has {_describe(payload['state_dict'])})")
        # The model's config, in the hyperparameters of an AdversarialClassifier built from a run's config.
        recorded = ((payload.get("hyper_parameters") or {}).get("config") or {}).get("model")
        return Weights("lightning", model, recorded if isinstance(recorded, dict) else None)
    if _tensor_dict(payload):
        return Weights("state_dict", payload)
    if isinstance(payload, dict) and _tensor_dict(payload.get("state_dict")):  # {"state_dict": ..., "epoch": ...}
        return Weights("state_dict", payload["state_dict"])
    raise UserError(f"checkpoint: {path} holds {_describe(payload)}; advlab reads {EXPECTED}")


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """advlab's model.pt as its dict: format, model (config), state_dict, metadata."""
    weights = read_weights(path, map_location)
    if weights.kind != "advlab":
        raise UserError(f"checkpoint: {path} is not an advlab checkpoint (expected format {FORMAT!r}) but "
                        f"{weights.description}")
    return {"format": FORMAT, "model": weights.model, "state_dict": weights.state_dict, "metadata": weights.metadata}


def add_metadata(path: str | os.PathLike, **items: str) -> None:
    """Add plain entries (e.g. the evaluation's metrics, as JSON text) to a checkpoint's metadata, atomically."""
    payload = read_checkpoint(path)
    payload["metadata"].update(items)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _without_pretrained(spec: dict) -> dict:
    """The config with its own weight loading turned off (timm's pretrained, torchvision's weights):
    the checkpoint supplies the weights."""
    spec = dict(spec)
    if spec.get("pretrained"):
        spec["pretrained"] = False
    if "_target_" in spec and spec.get("weights") is not None:
        spec["weights"] = None
    return spec


def _variants(state_dict: dict) -> list[dict]:
    """The state_dict, and with the wrappers' key prefixes (PREFIXES) taken off, in every order."""
    found, queue = [state_dict], [state_dict]
    while queue and len(found) < 16:
        current = queue.pop(0)
        for prefix in PREFIXES:
            if any(k.startswith(prefix) for k in current):
                stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in current.items()}
                if all(set(stripped) != set(f) for f in found):
                    found.append(stripped)
                    queue.append(stripped)
    return found


def _some(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def model_label(spec: dict | None) -> str:
    if not spec:
        return "the model"
    if "_target_" in spec:
        return f"model._target_={spec['_target_']}"
    return f"model.name={spec.get('name')}"


def load_weights(model: nn.Module, state_dict: dict, source: str = "the checkpoint", label: str = "the model") -> None:
    """Load state_dict into model, or into the model inside advlab's wrappers, taking off wrapper prefixes.

    Keys must match exactly (after a prefix is taken off); otherwise the error summarises the
    missing and unexpected keys of the closest match."""
    targets_ = [model] + ([unwrap(model)] if unwrap(model) is not model else [])
    best = None
    for target in targets_:
        expected = set(target.state_dict())
        for candidate in _variants(state_dict):
            missing, unexpected = expected - set(candidate), set(candidate) - expected
            if not missing and not unexpected:
                try:
                    target.load_state_dict(candidate)
                except RuntimeError as error:  # shapes differ: the message lists them
                    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
                    raise UserError(f"checkpoint: {source} does not fit {label}: {len(lines)} tensors have other "
                                    f"shapes ({'; '.join(lines[:3])}{' ...' if len(lines) > 3 else ''})") from error
                return
            if best is None or len(missing) + len(unexpected) < len(best[0]) + len(best[1]):
                best = (missing, unexpected)
    missing, unexpected = best
    raise UserError(f"checkpoint: {source} does not fit {label}: {len(missing)} missing keys ({_some(missing) or '-'}), "
                    f"{len(unexpected)} unexpected keys ({_some(unexpected) or '-'}); choose the model the weights "
                    "belong to with model=... (and its arguments)")


def load(path: str | os.PathLike, model: dict | None = None, map_location="cpu") -> nn.Module:
    """The model in the file at `path`, in eval mode.

    advlab's model.pt, and an advlab run's Lightning .ckpt that records its config, rebuild their
    own model (`model` is not needed, and not used). A file of weights only (a state_dict .pt/.pth,
    .safetensors, an older Lightning .ckpt) is loaded into the model `model` describes: a config as build_model takes it, e.g.
    {"_target_": "torchvision.models.resnet18", "num_classes": 10, "normalization": {...}}.
    path "pretrained" (PRETRAINED, when no such file exists): the model as `model` builds it, with
    the weights its config loads itself (RobustBench's zoo, timm's or torchvision's pretrained weights).
    """
    if str(path) == PRETRAINED and not Path(path).exists():
        return _pretrained(model)
    weights = read_weights(path, map_location)
    source = f"{path} ({weights.description})"
    if weights.model is not None:  # advlab's model.pt, an advlab run's Lightning checkpoint: they know their model
        spec = dict(weights.model)
        # The file's _target_ is called only if it builds models, or the user's config names it too.
        check_file_targets(spec, trusted=set(targets(model or {})), source=f"checkpoint {path}")
    elif model is None:
        raise UserError(f"checkpoint: {path} is not an advlab checkpoint but {weights.description}, which holds "
                        "weights only: give the model they belong to (model=... on the command line, "
                        "advlab.load(path, model={...}) in Python)")
    else:
        spec = dict(model)
    built = build_model(**_without_pretrained(spec))
    load_weights(built, weights.state_dict, source, model_label(spec))
    return built.eval()


def _pretrained(model: dict | None) -> nn.Module:
    spec = dict(model or {})
    if not (spec.get("pretrained") or ("_target_" in spec and spec.get("weights") is not None)):
        raise UserError(f"checkpoint={PRETRAINED}: {model_label(spec)} loads no weights of its own (its config has "
                        "no `pretrained: true` or `weights:`); give checkpoint=PATH to a weights file")
    return build_model(**spec).eval()


if __name__ == "__main__":  # python -m advlab.checkpoint PATH: what a checkpoint holds, without building the model
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.checkpoint PATH")
    payload = read_checkpoint(sys.argv[1])
    meta = {k: json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for k, v in payload["metadata"].items()}
    print(json.dumps({"model": payload["model"], "metadata": meta}, indent=2))
