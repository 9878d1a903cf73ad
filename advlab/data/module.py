"""Image datasets as one LightningDataModule: CIFAR-10, CIFAR-100, SVHN, or any NumPy arrays.

    ImageDataModule("cifar10")                      # conf/data/cifar10.yaml (data=cifar10, the default)
    ImageDataModule("cifar100", root="data/cifar100")
    ImageDataModule("npz", test="cifar10.1.npz")    # any x/y arrays: evaluate a checkpoint on them

Images are kept as uint8 (N, 3, H, W) tensors in memory (150 MB for CIFAR-10's training
set) and become float in [0, 1] only after they reach the batch's device
(`on_after_batch_transfer`), so host-to-device copies move a quarter of the bytes.
With `augment`, training batches are then randomly cropped (and, where the dataset allows,
flipped) there too (advlab.augment.random_crop_flip), on the GPU when there is one.

A named dataset's facts are its DatasetInfo (advlab.data.datasets); the config may override its
statistics and class names. The "npz" dataset's facts come from the config when given, else from
the files: num_classes = the largest label + 1, image size from `x`, mean/std from the training
images, class names "0", "1", ... (a run may first take them from its checkpoint: advlab.data.facts).
"""

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.augment import random_crop_flip
from advlab.data.datasets import DATASET_NAMES, DATASETS, DatasetInfo, digits, resolve_root
from advlab.data.files import SOURCES, DataError, channel_stats, load_npz_files, load_split, npz_files, to_unit_float

def _paths(value, key: str) -> list[Path]:
    if value is None:
        return []
    values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    if not values:
        raise ValueError(f"{key}: give a path to an .npz archive or a list of paths, got an empty list")
    return [Path(v).expanduser().resolve() for v in values]


def _image_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise ValueError(f"data.image_size must be [height, width] (positive integers), got {value!r}")
    return int(size[0]), int(size[1])


def _statistic(value, key: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{key} must have one value per channel (3: RGB), got {list(value)}")
    if key == "data.std" and any(v <= 0 for v in values):
        raise ValueError(f"data.std must be positive in every channel, got {list(values)}")
    return values

def _check_loader_settings(dataset, source, batch_size, eval_batch_size, val_size) -> None:
    if dataset not in DATASET_NAMES:
        raise ValueError(f"data.dataset must be one of {DATASET_NAMES}, got {dataset!r}")
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
    for name, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if val_size < 0 or (isinstance(val_size, float) and not val_size.is_integer() and val_size >= 1):
        raise ValueError(f"data.val_size must be >= 0 (an image count, or a fraction < 1), got {val_size}")


def _metadata(dataset, num_classes, image_size, mean, std, class_names):
    """The config's metadata keys, checked: against each other, and for a named dataset against its facts
    (the config may override its statistics and class names, not its class count or image size)."""
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or num_classes < 2):
        raise ValueError(f"data.num_classes must be an integer >= 2, got {num_classes!r}")
    num_classes = None if num_classes is None else int(num_classes)
    image_size = _image_size(image_size)
    class_names = None if class_names is None else tuple(str(c) for c in class_names)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"data.class_names must name {num_classes} classes (data.num_classes), got {len(class_names)}")
    if dataset in DATASETS:
        known = DATASETS[dataset]
        for key, given, fact in (("num_classes", num_classes, known.num_classes),
                                 ("image_size", image_size, known.image_size)):
            if given is not None and given != fact:
                raise ValueError(f"data.{key}: {dataset} has {fact}, got {given} (use data=npz for other data)")
        if class_names is not None and len(class_names) != known.num_classes:
            raise ValueError(f"data.class_names must name {known.num_classes} classes, got {len(class_names)}")
    return num_classes, image_size, _statistic(mean, "data.mean"), _statistic(std, "data.std"), class_names


def _locate(dataset, root, train_files: list[Path], test_files: list[Path]) -> Path | None:
    """The folder a named dataset is read from; None for npz, whose files must exist."""
    if dataset == "npz":
        if not test_files:
            raise ValueError("data=npz needs data.test=PATH.npz (arrays x and y; data.train=PATH.npz to train too)")
        for path in train_files + test_files:
            if not path.is_file():
                raise DataError(f"{path}: no such file (data.train / data.test)")
        return None
    if train_files or test_files:
        raise ValueError(f"data.train and data.test name the files of data=npz; data={dataset} reads data.root")
    return resolve_root(root, dataset)


class ImageDataModule(pl.LightningDataModule):
    """Train, validation and test splits of one dataset as uint8 tensors in memory.

    dataset: cifar10 | cifar100 | svhn (root, source, download: where and how to read it) or npz
    (train, test: the archives to read). num_classes, image_size: must match a named dataset;
    null for npz takes them from the files. mean, std, class_names: override the dataset's.
    val_size: images held out of the training set for validation (an int, or a fraction < 1).
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str | None = None,
        source: str = "auto",
        download: bool = True,
        train: str | Sequence[str] | None = None,
        test: str | Sequence[str] | None = None,
        num_classes: int | None = None,
        image_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        val_size: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        max_train_images: int | None = None,
        max_test_images: int | None = None,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
    ):
        super().__init__()
        _check_loader_settings(dataset, source, batch_size, eval_batch_size, val_size)
        self.dataset = dataset
        self.num_classes, self.image_size, self.mean, self.std, self.class_names = _metadata(
            dataset, num_classes, image_size, mean, std, class_names)
        self.train_files, self.test_files = _paths(train, "data.train"), _paths(test, "data.test")
        self.root = _locate(dataset, root, self.train_files, self.test_files)
        self.source, self.download = source, download
        self.val_size, self.split_seed = val_size, split_seed
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.max_train_images, self.max_test_images = max_train_images, max_test_images
        self.num_workers = num_workers
        self.augment = bool(augment)
        self.train_set = self.val_set = self.test_set = None
        self._info: DatasetInfo | None = None
        self._loaded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- metadata ------------------------------------------------------------------------------
    @property
    def info(self) -> DatasetInfo:
        """The dataset's metadata, the config's values over the dataset's own. For npz, what the
        config leaves null is read off the files (which are then loaded and validated)."""
        if self._info is None:
            self._info = self._resolve_info()
        return self._info

    def _resolve_info(self) -> DatasetInfo:
        overrides = {k: v for k, v in (("mean", self.mean), ("std", self.std), ("class_names", self.class_names))
                     if v is not None}
        if self.dataset != "npz":
            return replace(DATASETS[self.dataset], **overrides)
        splits = ["test"] + (["train"] if self.train_files else [])
        labels = [self._split(s)[1] for s in splits]
        sizes = {tuple(self._split(s)[0].shape[2:]) for s in splits}
        if len(sizes) > 1:
            raise DataError(f"data.train and data.test hold images of different sizes: {sorted(sizes)}")
        image_size = sizes.pop()
        if self.image_size is not None and self.image_size != image_size:
            raise DataError(f"data.image_size is {list(self.image_size)} but the archives hold "
                            f"{image_size[0]}x{image_size[1]} images ({', '.join(map(str, self.test_files))})")
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = max(2, max(int(y.max()) + 1 if len(y) else 0 for y in labels))
        mean, std = self.mean, self.std
        if (mean is None or std is None) and self.train_files:
            measured = channel_stats(self._split("train")[0])
            mean, std = mean or measured[0], std or measured[1]
        return DatasetInfo("npz", num_classes, image_size, mean, std, self.class_names or digits(num_classes))

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split, loaded once and validated."""
        if split not in self._loaded:
            if self.dataset == "npz":
                files = self.train_files if split == "train" else self.test_files
                if not files:
                    raise DataError("data=npz has no training set: give data.train=PATH.npz, or evaluate a saved "
                                    "model on data.test with checkpoint=PATH")
                self._loaded[split] = load_npz_files(files, self.num_classes)
            else:
                x, y = load_split(self.root, split, self.source, self.download, self.dataset)
                size = tuple(x.shape[2:])
                if size != DATASETS[self.dataset].image_size:
                    raise DataError(f"{self.root}: {self.dataset} images are {DATASETS[self.dataset].image_size}, "
                                    f"the {split} split holds {size[0]}x{size[1]} images")
                self._loaded[split] = x, y
        return self._loaded[split]

    # -- Lightning ------------------------------------------------------------------------------
    def prepare_data(self):
        # Downloads (if needed) before setup, once per node under distributed training.
        if self.dataset != "npz" and self.source != "npz" and not npz_files(self.root, "train") and self.download:
            load_split(self.root, "train", self.source, self.download, self.dataset)

    def _validation_count(self, n: int) -> int:
        if isinstance(self.val_size, float) and not self.val_size.is_integer():
            return int(round(self.val_size * n))
        return int(self.val_size)

    def setup(self, stage: str | None = None):
        if stage in (None, "fit", "validate") and self.train_set is None:
            x, y = self._split("train")
            self.info  # noqa: B018 - resolved (npz: validated across the splits) while the splits are loaded
            n_val = self._validation_count(len(x))
            if n_val >= len(x):
                raise ValueError(f"data.val_size must be smaller than the training set ({len(x)}), got {self.val_size}")
            # A fixed permutation, independent of the run's seed, so every run validates on the same images.
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            val, train = order[:n_val], order[n_val:]
            if self.max_train_images:
                train = train[: self.max_train_images]
            self.train_set = TensorDataset(x[train], y[train])
            self.val_set = TensorDataset(x[val], y[val])
            self._loaded.pop("train", None)
        if stage in (None, "test") and self.test_set is None:
            x, y = self._split("test")
            self.info  # noqa: B018
            if self.max_test_images:
                x, y = x[: self.max_test_images], y[: self.max_test_images]
            self.test_set = TensorDataset(x, y)
            self._loaded.pop("test", None)

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
            x = random_crop_flip(x, flip=self.info.hflip)
        return x, y


class CIFAR10DataModule(ImageDataModule):
    """ImageDataModule("cifar10", ...): CIFAR-10, the default dataset."""

    def __init__(self, root: str | None = None, **kwargs):
        super().__init__("cifar10", root, **kwargs)
