"""CIFAR-10 as a LightningDataModule, from NumPy archives or torchvision's download.

Images are kept as uint8 (N, 3, 32, 32) tensors in memory (150 MB for the training
set) and become float in [0, 1] only after they reach the batch's device
(`on_after_batch_transfer`), so host-to-device copies move a quarter of the bytes.
With `augment`, training batches are then randomly cropped and flipped there too
(advlab.augment.random_crop_flip), on the GPU when there is one.

Two sources, picked by `source`:
- "npz": `train_*.npz` and `test.npz` in `root`, each with `x` uint8 (N, 32, 32, 3)
  and `y` labels, read with allow_pickle=False. Offline copies and robustness test
  sets (CIFAR-10.1, CIFAR-10-C) come in this form.
- "torchvision": torchvision's CIFAR10, which verifies MD5 checksums of the files it
  finds and downloads them (checksum-verified) when they are missing and `download`.
- "auto" (default): npz when the archives are there, else torchvision.
"""

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.augment import random_crop_flip
from advlab.errors import UserFileError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASS_NAMES)
SOURCES = ("auto", "npz", "torchvision")


class DataError(UserFileError):
    """The data root holds nothing usable, or a file in it is not what it should be."""


def resolve_root(root: str | os.PathLike | None) -> Path:
    """`root`, else the ADVLAB_DATA environment variable, else ./data; made absolute."""
    chosen = root or os.environ.get("ADVLAB_DATA") or "data"
    return Path(chosen).expanduser().resolve()


def class_index(name_or_index: str | int) -> int:
    if isinstance(name_or_index, str) and not name_or_index.isdigit():
        if name_or_index not in CLASS_NAMES:
            raise ValueError(f"target class: unknown name {name_or_index!r}; allowed: {', '.join(CLASS_NAMES)} or 0-9")
        return CLASS_NAMES.index(name_or_index)
    index = int(name_or_index)
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(f"target class must be in [0, {NUM_CLASSES - 1}], got {index}")
    return index


def _missing_data_message(root: Path) -> str:
    return (
        f"No usable CIFAR-10 data under {root}.\n"
        "Put one of these there:\n"
        "  - NumPy archives train_1.npz ... train_5.npz and test.npz, each with arrays x (uint8, N x 32 x 32 x 3, RGB)\n"
        "    and y (labels 0-9), or\n"
        "  - torchvision's folder cifar-10-batches-py/ (it is downloaded there, checksum-verified, when\n"
        "    data.download=true and the internet can be reached).\n"
        "Choose the folder with data.root=PATH or the ADVLAB_DATA environment variable."
    )


def _npz_files(root: Path, split: str) -> list[Path]:
    if split == "test":
        return [root / "test.npz"] if (root / "test.npz").is_file() else []
    files = [p for p in root.glob("train_*.npz") if re.fullmatch(r"train_\d+\.npz", p.name)]
    return sorted(files, key=lambda p: int(p.stem.split("_")[1]))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable NumPy .npz archive ({err})") from err
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise DataError(f"{path}: 'x' must be uint8 of shape (N, H, W, 3), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must hold {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must be in [0, {NUM_CLASSES - 1}], got [{y.min()}, {y.max()}]")
    return x, y


def load_npz_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    files = _npz_files(root, split)
    if not files:
        raise DataError(_missing_data_message(root))
    parts = [_read_npz(p) for p in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _to_tensors(x, y)


def load_torchvision_split(root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    try:
        # torchvision checks the MD5 of every file before it unpickles the batches.
        dataset = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as err:  # "Dataset not found or corrupted"
        raise DataError(f"{_missing_data_message(root)}\n(torchvision: {err})") from err
    except OSError as err:  # no network
        raise DataError(f"{_missing_data_message(root)}\n(download failed: {err})") from err
    return _to_tensors(dataset.data, np.asarray(dataset.targets))


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(y.astype(np.int64))


def load_split(root, split: str, source: str = "auto", download: bool = True):
    """uint8 images (N, 3, H, W) and int64 labels of `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    root = resolve_root(root)
    if source == "npz" or (source == "auto" and _npz_files(root, split)):
        return load_npz_split(root, split)
    return load_torchvision_split(root, split, download)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (floating input is passed through)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class CIFAR10DataModule(pl.LightningDataModule):
    def __init__(
        self,
        root: str | None = None,
        source: str = "auto",
        download: bool = True,
        val_size: int = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        max_train_images: int | None = None,
        max_test_images: int | None = None,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
        for name, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if int(val_size) < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size}")
        self.root = resolve_root(root)
        self.source, self.download = source, download
        self.val_size, self.split_seed = int(val_size), split_seed
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.max_train_images, self.max_test_images = max_train_images, max_test_images
        self.num_workers = num_workers
        self.augment = bool(augment)
        self.train_set = self.val_set = self.test_set = None

    def prepare_data(self):
        # Downloads (if needed) before setup, once per node under distributed training.
        if self.source != "npz" and not _npz_files(self.root, "train") and self.download:
            load_split(self.root, "train", self.source, self.download)

    def setup(self, stage: str | None = None):
        if stage in (None, "fit", "validate") and self.train_set is None:
            x, y = load_split(self.root, "train", self.source, self.download)
            if self.val_size >= len(x):
                raise ValueError(f"data.val_size must be smaller than the training set ({len(x)}), got {self.val_size}")
            # A fixed permutation, independent of the run's seed, so every run validates on the same images.
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            val, train = order[: self.val_size], order[self.val_size :]
            if self.max_train_images:
                train = train[: self.max_train_images]
            self.train_set = TensorDataset(x[train], y[train])
            self.val_set = TensorDataset(x[val], y[val])
        if stage in (None, "test") and self.test_set is None:
            x, y = load_split(self.root, "test", self.source, self.download)
            if self.max_test_images:
                x, y = x[: self.max_test_images], y[: self.max_test_images]
            self.test_set = TensorDataset(x, y)

    def _loader(self, dataset, batch_size, shuffle):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self):
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        x = to_unit_float(x)
        # Only batches the trainer fits on: validation, test and attacks see the images as they are.
        if self.augment and self.trainer is not None and self.trainer.training:
            x = random_crop_flip(x)
        return x, y
