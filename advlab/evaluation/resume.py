"""Resumable evaluation: every finished batch of the per-image record is kept on disk, so an evaluation
killed (even with SIGKILL) and started again with the same command continues from its last finished
batch and ends with the record an uninterrupted run gives.

The batches live in a folder named by the evaluation's fingerprint: the model's weights, the evaluated
images and labels, and the settings that change a number (advlab.evaluation.settings). The same command
finds the same folder whatever its run folder is; anything else finds another. Each batch is one .npz
file, written atomically and read with allow_pickle=False. The folder is removed when the evaluation
ends. Where: settings.cache_dir, else ADVLAB_CACHE, else ~/.cache/advlab (under evaluations/).

Attacks draw their random numbers from generators seeded per call (advlab.attacks._core.make_generator),
so a batch gives the same rows whether or not the batches before it were evaluated in this process.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.io import atomic_path


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state_dict (names, shapes, dtypes and values): the same weights give the same
    digest whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(_bytes(tensor))
    return digest.hexdigest()


def data_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the evaluated images and labels (their values, dtype and shape)."""
    digest = hashlib.sha256()
    for t in (images, labels):
        digest.update(f"{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(_bytes(t))
    return digest.hexdigest()


def _bytes(t: torch.Tensor) -> bytes:
    """A tensor's values as raw bytes (any dtype, any shape, 0-d included)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    chosen = cache_dir or os.environ.get("ADVLAB_CACHE") or Path.home() / ".cache" / "advlab"
    return Path(chosen).expanduser() / "evaluations"


class BatchStore:
    """The finished batches of one evaluation stage (`stage`: "main", "fallback", ...), in `folder`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @classmethod
    def for_evaluation(cls, fingerprint: dict, stage: str, cache_dir=None) -> "BatchStore":
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return cls(cache_root(cache_dir) / key / stage)

    def _path(self, number: int) -> Path:
        return self.folder / f"batch{number:06d}.npz"

    def load(self, number: int) -> tuple[dict, dict] | None:
        """(columns, arrays) of a finished batch, or None."""
        path = self._path(number)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            columns = {k[2:]: saved[k] for k in saved.files if k.startswith("c:")}
            arrays = {k[2:]: saved[k] for k in saved.files if k.startswith("a:")}
        return columns, arrays

    def save(self, number: int, columns: dict, arrays: dict | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {f"c:{k}": np.asarray(v) for k, v in columns.items()}
        payload.update({f"a:{k}": np.asarray(v) for k, v in (arrays or {}).items()})
        with atomic_path(self._path(number)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **payload)

    def finished(self) -> int:
        return len(list(self.folder.glob("batch*.npz"))) if self.folder.is_dir() else 0

    def clear(self) -> None:
        """Forget the evaluation (it ended): its folder and, when empty, the fingerprint's."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:
            pass
