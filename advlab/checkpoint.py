"""Model files a user can share and load safely.

A checkpoint is a dict of tensors and plain values, saved with torch.save and
loaded with weights_only=True, so loading never runs code from the file. It holds
the model's registry name and arguments, so `load(path)` rebuilds it.
"""

import os

import torch
from torch import nn

from advlab.errors import UserError, UserFileError
from advlab.io import atomic_path
from advlab.models import build_model

FORMAT = "advlab-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_args: dict, metadata: dict | None = None):
    """model_args: what build_model takes (name=..., plus arguments); metadata: plain values only."""
    payload = {
        "format": FORMAT,
        "model": dict(model_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise UserFileError(f"checkpoint: no file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal or corruption
        raise UserError(f"checkpoint: {path} is not a readable advlab checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint: {path} is not an advlab checkpoint (expected format {FORMAT!r})")
    return payload


def add_metadata(path: str | os.PathLike, **items: str) -> None:
    """Add plain entries (e.g. the evaluation's metrics, as JSON text) to a checkpoint's metadata, atomically."""
    payload = read_checkpoint(path)
    payload["metadata"].update(items)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuild the model saved at `path`, in eval mode."""
    payload = read_checkpoint(path, map_location)
    model = build_model(**payload["model"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


if __name__ == "__main__":  # python -m advlab.checkpoint PATH: what a checkpoint holds, without building the model
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.checkpoint PATH")
    payload = read_checkpoint(sys.argv[1])
    meta = {k: json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for k, v in payload["metadata"].items()}
    print(json.dumps({"model": payload["model"], "metadata": meta}, indent=2))
