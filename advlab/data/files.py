"""Reading a dataset's files into uint8 tensors: NumPy archives (parsed with allow_pickle=False) or
torchvision's checksum-verified downloads; and the per-channel statistics of images.

Sources of a named dataset, picked by `source`:
- "npz": `train_*.npz` and `test.npz` in `root`, each with `x` uint8 (N, H, W, 3) and `y`
  integer labels, read with allow_pickle=False. Offline copies come in this form.
- "torchvision": torchvision's CIFAR10 / CIFAR100 / SVHN, which verifies the MD5 checksums of
  the files it finds and downloads them (checksum-verified) when they are missing and `download`.
- "auto" (default): npz when the archives are there, else torchvision.
Any other arrays (data=npz) are read with `load_npz_files`: `x` uint8 of shape (N, H, W, 3) (channels
last, as NumPy image arrays usually are) or (N, 3, H, W) (channels first, when the last axis is not 3),
any H x W; `y` integer labels (N,) in [0, num_classes).
"""

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from advlab.data.datasets import dataset_info, resolve_root
from advlab.errors import UserFileError

SOURCES = ("auto", "npz", "torchvision")


class DataError(UserFileError):
    """The data root holds nothing usable, or a file in it is not what it should be."""


def _missing_data_message(root: Path, dataset: str = "cifar10") -> str:
    info = dataset_info(dataset)
    h, w = info.image_size
    return (
        f"No usable {info.title} data under {root}.\n"
        "Put one of these there:\n"
        f"  - NumPy archives train_1.npz ... train_5.npz and test.npz, each with arrays x (uint8, N x {h} x {w} x 3, RGB)\n"
        f"    and y (labels 0-{info.num_classes - 1}), or\n"
        f"  - {info.torchvision_files} (downloaded there, checksum-verified, when\n"
        "    data.download=true and the internet can be reached).\n"
        f"Choose the folder with data.root=PATH or the {info.root_variable} environment variable."
    )


def npz_files(root: Path, split: str) -> list[Path]:
    if split == "test":
        return [root / "test.npz"] if (root / "test.npz").is_file() else []
    files = [p for p in root.glob("train_*.npz") if re.fullmatch(r"train_\d+\.npz", p.name)]
    return sorted(files, key=lambda p: int(p.stem.split("_")[1]))


def read_npz(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (N, H, W, 3) and y (N,) from the archive at `path` (allow_pickle=False), validated.

    x is uint8 (0-255), or float in [0, 1] (saved adversarial examples: advlab.evaluation.adversarial, whose
    perturbations would not survive a round to uint8; read as float32), stored channels last (N, H, W, 3) or
    channels first (N, 3, H, W); y must be integer labels >= 0, and < num_classes when it is given. A DataError
    names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable NumPy .npz archive ({err})") from err
    floating = np.issubdtype(x.dtype, np.floating)
    if (x.dtype == np.uint8 or floating) and x.ndim == 4 and x.shape[3] != 3 and x.shape[1] == 3:
        x = x.transpose(0, 2, 3, 1)  # channels first -> channels last
    if not (x.dtype == np.uint8 or floating) or x.ndim != 4 or x.shape[3] != 3:
        raise DataError(f"{path}: 'x' must be uint8 of shape (N, H, W, 3) or (N, 3, H, W) (RGB, 0-255; or float in "
                        f"[0, 1]), got {x.dtype} {x.shape}")
    if floating:
        x = x.astype(np.float32)
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{path}: float images must lie in [0, 1], got values in [{np.nanmin(x):.4g}, "
                            f"{np.nanmax(x):.4g}]")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must hold {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        allowed = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
        raise DataError(f"{path}: labels must be in {allowed}, got [{y.min()}, {y.max()}]")
    return x, y


def load_npz_files(paths: Sequence[str | os.PathLike], num_classes: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The archives at `paths` (read_npz each), concatenated: uint8 (or float32) (N, 3, H, W), int64 labels."""
    parts = [read_npz(p, num_classes) for p in paths]
    if len({p[0].dtype for p in parts}) > 1:
        raise DataError(f"the archives of one split must all hold uint8 or all float images, got "
                        f"{', '.join(f'{Path(f)}: {x.dtype}' for f, (x, _) in zip(paths, parts))}")
    sizes = {p[0].shape[1:3] for p in parts}
    if len(sizes) > 1:
        shown = ", ".join(f"{Path(f)}: {x.shape[1]}x{x.shape[2]}" for f, (x, _) in zip(paths, parts))
        raise DataError(f"the archives of one split must hold images of one size, got {shown}")
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _to_tensors(x, y)


def load_npz_split(root: Path, split: str, dataset: str = "cifar10") -> tuple[torch.Tensor, torch.Tensor]:
    files = npz_files(root, split)
    if not files:
        raise DataError(_missing_data_message(root, dataset))
    return load_npz_files(files, dataset_info(dataset).num_classes)


def load_torchvision_split(root: Path, split: str, download: bool, dataset: str = "cifar10"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision checks the MD5 of every file before it reads it (CIFAR: before unpickling the batches).
    try:
        if dataset == "svhn":
            from torchvision.datasets import SVHN

            data = SVHN(str(root), split=split, download=download)  # (N, 3, 32, 32); digit 0 is label 0
            return _to_tensors(data.data.transpose(0, 2, 3, 1), np.asarray(data.labels))
        from torchvision.datasets import CIFAR10, CIFAR100

        data = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset](str(root), train=split == "train",
                                                                  download=download)
    except RuntimeError as err:  # "Dataset not found or corrupted"
        raise DataError(f"{_missing_data_message(root, dataset)}\n(torchvision: {err})") from err
    except ImportError as err:  # SVHN's .mat files need scipy
        raise DataError(f"{_missing_data_message(root, dataset)}\n(torchvision needs {err.name}: pip install "
                        f"{err.name})") from err
    except OSError as err:  # no network
        raise DataError(f"{_missing_data_message(root, dataset)}\n(download failed: {err})") from err
    return _to_tensors(data.data, np.asarray(data.targets))


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(y.astype(np.int64))


def load_split(root, split: str, source: str = "auto", download: bool = True, dataset: str = "cifar10"):
    """uint8 images (N, 3, H, W) and int64 labels of `split` ("train" or "test") of a named dataset."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    dataset_info(dataset)
    root = resolve_root(root, dataset)
    if source == "npz" or (source == "auto" and npz_files(root, split)):
        return load_npz_split(root, split, dataset)
    return load_torchvision_split(root, split, download, dataset)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (floating input is passed through)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def channel_stats(x: torch.Tensor, chunk: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of images (N, C, H, W), uint8 or float in [0, 1], on the [0, 1]
    scale."""
    if len(x) == 0:
        raise ValueError("channel_stats: no images")
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.to(torch.float64).div_(255 if x.dtype == torch.uint8 else 1)
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
