"""Saved adversarial examples: one file per eps, the worst-case adversarial image of every image.

    adversarial/eps_0.0313725.npz     x: float32 (N, 3, H, W) in [0, 1] (the image itself where no attack
                                      found one), y: int64 labels, index: int64 positions in the test set

NumPy archives, read with allow_pickle=False; float32 because a perturbation smaller than 1/255 would
not survive a round to uint8. They can be fed back as a test set (data=npz data.test=adversarial/eps_...npz:
the npz reader takes float images in [0, 1]) or to another model's evaluation (evaluation.transfer_from).
"""

from pathlib import Path

import numpy as np
import torch

from advlab.evaluation.record import fmt
from advlab.io import atomic_path

FOLDER = "adversarial"


def path_for(folder: str | Path, eps: float) -> Path:
    return Path(folder) / f"eps_{fmt(eps)}.npz"


def write_adversarial(folder: str | Path, adversarial: dict, labels: torch.Tensor, index: np.ndarray) -> list[Path]:
    """One file per eps of `adversarial` ({eps: (N, C, H, W) tensor}), rows in the order of `index`."""
    paths = []
    for e, x in adversarial.items():
        path = path_for(folder, e)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x.detach().cpu().float().numpy(), y=labels.cpu().numpy().astype(np.int64),
                     index=np.asarray(index, dtype=np.int64))
        paths.append(path)
    return paths


def read_adversarial(folder: str | Path, eps: float) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images, labels, index) saved for eps in `folder` (a run folder or its adversarial/ folder)."""
    folder = Path(folder)
    if (folder / FOLDER).is_dir():
        folder = folder / FOLDER
    path = path_for(folder, eps)
    if not path.is_file():
        saved = sorted(p.name for p in folder.glob("eps_*.npz")) if folder.is_dir() else []
        raise FileNotFoundError(f"{path}: no adversarial examples saved for eps={eps:g} (saved: "
                                f"{', '.join(saved) or 'none; evaluate with evaluation.save_adversarial=true'})")
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f["x"]), torch.from_numpy(f["y"]), f["index"]
