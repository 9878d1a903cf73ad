"""Image datasets as one LightningDataModule: CIFAR-10, CIFAR-100, SVHN, or any NumPy arrays.

    ImageDataModule("cifar10")                      # conf/data/cifar10.yaml (data=cifar10, the default)
    ImageDataModule("cifar100", root="data/cifar100")
    ImageDataModule("npz", test="cifar10.1.npz")    # any x/y arrays: evaluate a checkpoint on them

Images are kept as uint8 (N, 3, H, W) tensors in memory (150 MB for CIFAR-10's training
set) and become float in [0, 1] only after they reach the batch's device
(`on_after_batch_transfer`), so host-to-device copies move a quarter of the bytes.
With `augment`, training batches are then randomly cropped (and, where the dataset allows,
flipped) there too (advlab.augment.random_crop_flip), on the GPU when there is one.

Each named dataset has its metadata here (DATASETS: number of classes, image size, the
training set's per-channel mean/std, class names); the Hydra configs conf/data/*.yaml repeat
it as keys, so the model configs read it (`num_classes: ${data.num_classes}`, the
normalisation layer's `${data.mean}`/`${data.std}`), and so do evaluation, attacks and reports.

Sources of a named dataset, picked by `source`:
- "npz": `train_*.npz` and `test.npz` in `root`, each with `x` uint8 (N, H, W, 3) and `y`
  integer labels, read with allow_pickle=False. Offline copies come in this form.
- "torchvision": torchvision's CIFAR10 / CIFAR100 / SVHN, which verifies the MD5 checksums of
  the files it finds and downloads them (checksum-verified) when they are missing and `download`.
- "auto" (default): npz when the archives are there, else torchvision.

The "npz" dataset reads the files the user names (`test=`, optional `train=`; a path or a list
of paths), e.g. CIFAR-10.1 or CIFAR-10-C arrays as the test set of a model trained on CIFAR-10.
Accepted: `x` uint8 of shape (N, H, W, 3) (channels last, as NumPy image arrays usually are) or
(N, 3, H, W) (channels first, when the last axis is not 3), any H x W; `y` integer labels (N,)
in [0, num_classes). Its metadata comes from the config when given, else from the files:
num_classes = the largest label + 1 (or the checkpoint's, see advlab.experiment), image size
from `x`, mean/std from the training images, class names "0", "1", ...
"""

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.augment import random_crop_flip
from advlab.errors import UserFileError

SOURCES = ("auto", "npz", "torchvision")


@dataclass(frozen=True)
class DatasetInfo:
    """What the model, attacks and reports need to know about a dataset."""

    name: str
    num_classes: int
    image_size: tuple[int, int]  # height, width
    mean: tuple[float, ...] | None  # per-channel statistics of the training set on the [0, 1] scale
    std: tuple[float, ...] | None
    class_names: tuple[str, ...]
    hflip: bool = True  # a horizontal flip keeps the class (not for digits)


def _digits(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


CIFAR100_CLASS_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)

DATASETS: dict[str, DatasetInfo] = {
    # Statistics of the training sets on the [0, 1] scale: CIFAR-10's measured on the offline copy
    # (within 3e-7 of the published figures); CIFAR-100's and SVHN's (train split) are the published ones.
    "cifar10": DatasetInfo(
        "cifar10", 10, (32, 32), (0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo(
        "cifar100", 100, (32, 32), (0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047),
        CIFAR100_CLASS_NAMES),
    "svhn": DatasetInfo(
        "svhn", 10, (32, 32), (0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614),
        _digits(10), hflip=False),
}
DATASET_NAMES = (*DATASETS, "npz")

# Where each named dataset lives when data.root is not given: an environment variable, else a folder.
ROOT_DEFAULTS = {"cifar10": ("ADVLAB_DATA", "data"), "cifar100": ("ADVLAB_CIFAR100", "data/cifar100"),
                 "svhn": ("ADVLAB_SVHN", "data/svhn")}

_TORCHVISION_FILES = {"cifar10": "torchvision's folder cifar-10-batches-py/",
                      "cifar100": "torchvision's folder cifar-100-python/",
                      "svhn": "torchvision's files train_32x32.mat and test_32x32.mat"}
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}

# CIFAR-10, the default dataset: kept for code written before the other datasets.
CLASS_NAMES = DATASETS["cifar10"].class_names
NUM_CLASSES = DATASETS["cifar10"].num_classes


class DataError(UserFileError):
    """The data root holds nothing usable, or a file in it is not what it should be."""


def dataset_info(name: str) -> DatasetInfo:
    """The metadata of a named dataset (cifar10, cifar100, svhn)."""
    if name not in DATASETS:
        raise ValueError(f"data.dataset must be one of {DATASET_NAMES}, got {name!r}")
    return DATASETS[name]


def resolve_root(root: str | os.PathLike | None, dataset: str = "cifar10") -> Path:
    """`root`, else the dataset's environment variable (CIFAR-10: ADVLAB_DATA), else ./data
    (./data/cifar100, ./data/svhn); made absolute."""
    variable, default = ROOT_DEFAULTS.get(dataset, ("ADVLAB_DATA", "data"))
    chosen = root or os.environ.get(variable) or default
    return Path(chosen).expanduser().resolve()


def class_index(name_or_index: str | int, class_names: Sequence[str] | None = CLASS_NAMES,
                num_classes: int | None = None) -> int:
    """A class given by name (one of class_names) or index (an int, or digits), as an index.

    class_names=None: only indices are known (then checked against num_classes when given).
    Defaults: CIFAR-10's names.
    """
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if isinstance(name_or_index, str) and class_names is not None and name_or_index in class_names:
        return list(class_names).index(name_or_index)  # before digits: SVHN's names are "0" ... "9"
    if isinstance(name_or_index, str) and not name_or_index.isdigit():
        if class_names is None:
            raise ValueError(f"target class: {name_or_index!r} is a name, but the dataset's class names are not "
                             "known (data.class_names); give an index")
        shown = ", ".join(class_names) if len(class_names) <= 20 else ", ".join(class_names[:20]) + ", ..."
        raise ValueError(f"target class: unknown name {name_or_index!r}; allowed: {shown} "
                         f"or 0-{len(class_names) - 1}")
    index = int(name_or_index)
    if index < 0 or (num_classes is not None and index >= num_classes):
        upper = "" if num_classes is None else f", {num_classes - 1}"
        raise ValueError(f"target class must be in [0{upper}], got {index}")
    return index


def _missing_data_message(root: Path, dataset: str = "cifar10") -> str:
    info = dataset_info(dataset)
    h, w = info.image_size
    variable = ROOT_DEFAULTS[dataset][0]
    return (
        f"No usable {_PRETTY[dataset]} data under {root}.\n"
        "Put one of these there:\n"
        f"  - NumPy archives train_1.npz ... train_5.npz and test.npz, each with arrays x (uint8, N x {h} x {w} x 3, RGB)\n"
        f"    and y (labels 0-{info.num_classes - 1}), or\n"
        f"  - {_TORCHVISION_FILES[dataset]} (downloaded there, checksum-verified, when\n"
        "    data.download=true and the internet can be reached).\n"
        f"Choose the folder with data.root=PATH or the {variable} environment variable."
    )


def _npz_files(root: Path, split: str) -> list[Path]:
    if split == "test":
        return [root / "test.npz"] if (root / "test.npz").is_file() else []
    files = [p for p in root.glob("train_*.npz") if re.fullmatch(r"train_\d+\.npz", p.name)]
    return sorted(files, key=lambda p: int(p.stem.split("_")[1]))


def read_npz(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, H, W, 3) and y (N,) from the archive at `path` (allow_pickle=False), validated.

    x may be stored channels last (N, H, W, 3) or channels first (N, 3, H, W); y must be integer
    labels >= 0, and < num_classes when it is given. A DataError names the file.
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
    if x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] != 3 and x.shape[1] == 3:
        x = x.transpose(0, 2, 3, 1)  # channels first -> channels last
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise DataError(f"{path}: 'x' must be uint8 of shape (N, H, W, 3) or (N, 3, H, W) (RGB, 0-255), "
                        f"got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must hold {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        allowed = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
        raise DataError(f"{path}: labels must be in {allowed}, got [{y.min()}, {y.max()}]")
    return x, y


def load_npz_files(paths: Sequence[str | os.PathLike], num_classes: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The archives at `paths` (read_npz each), concatenated: uint8 (N, 3, H, W) and int64 labels."""
    parts = [read_npz(p, num_classes) for p in paths]
    sizes = {p[0].shape[1:3] for p in parts}
    if len(sizes) > 1:
        shown = ", ".join(f"{Path(f)}: {x.shape[1]}x{x.shape[2]}" for f, (x, _) in zip(paths, parts))
        raise DataError(f"the archives of one split must hold images of one size, got {shown}")
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _to_tensors(x, y)


def load_npz_split(root: Path, split: str, dataset: str = "cifar10") -> tuple[torch.Tensor, torch.Tensor]:
    files = _npz_files(root, split)
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
    if source == "npz" or (source == "auto" and _npz_files(root, split)):
        return load_npz_split(root, split, dataset)
    return load_torchvision_split(root, split, download, dataset)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (floating input is passed through)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def channel_stats(x: torch.Tensor, chunk: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) on the [0, 1] scale."""
    if len(x) == 0:
        raise ValueError("channel_stats: no images")
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.to(torch.float64).div_(255)
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


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
        if dataset not in DATASET_NAMES:
            raise ValueError(f"data.dataset must be one of {DATASET_NAMES}, got {dataset!r}")
        if source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
        for name, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if val_size < 0 or (isinstance(val_size, float) and not val_size.is_integer() and val_size >= 1):
            raise ValueError(f"data.val_size must be >= 0 (an image count, or a fraction < 1), got {val_size}")
        if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                        or num_classes < 2):
            raise ValueError(f"data.num_classes must be an integer >= 2, got {num_classes!r}")
        self.dataset = dataset
        self.train_files, self.test_files = _paths(train, "data.train"), _paths(test, "data.test")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.image_size = _image_size(image_size)
        self.mean, self.std = _statistic(mean, "data.mean"), _statistic(std, "data.std")
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"data.class_names must name {self.num_classes} classes (data.num_classes), "
                             f"got {len(self.class_names)}")
        if dataset == "npz":
            if not self.test_files:
                raise ValueError("data=npz needs data.test=PATH.npz (arrays x and y; data.train=PATH.npz to train too)")
            for path in self.train_files + self.test_files:
                if not path.is_file():
                    raise DataError(f"{path}: no such file (data.train / data.test)")
            self.root = None
        else:
            if self.train_files or self.test_files:
                raise ValueError(f"data.train and data.test name the files of data=npz; data={dataset} reads "
                                 "data.root")
            known = DATASETS[dataset]
            for key, given, fact in (("num_classes", self.num_classes, known.num_classes),
                                     ("image_size", self.image_size, known.image_size)):
                if given is not None and given != fact:
                    raise ValueError(f"data.{key}: {dataset} has {fact}, got {given} (use data=npz for other data)")
            if self.class_names is not None and len(self.class_names) != known.num_classes:
                raise ValueError(f"data.class_names must name {known.num_classes} classes, got {len(self.class_names)}")
            self.root = resolve_root(root, dataset)
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
        return DatasetInfo("npz", num_classes, image_size, mean, std, self.class_names or _digits(num_classes))

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
        if self.dataset != "npz" and self.source != "npz" and not _npz_files(self.root, "train") and self.download:
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


# -- the data's metadata in a run's config ------------------------------------------------------
METADATA_KEYS = ("num_classes", "image_size", "mean", "std", "class_names")


def checkpoint_classes(path: str | os.PathLike) -> dict:
    """num_classes and class_names of the data a saved advlab model was trained on, as far as its file
    says ({} when it says nothing): its run's data config, else its model's num_classes (and CIFAR-10's
    names for models saved before datasets were configurable, which were all CIFAR-10's)."""
    import json

    from advlab.checkpoint import read_checkpoint

    try:
        payload = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - not an advlab model.pt (or missing): it says nothing, the loader explains
        return {}
    try:
        data = json.loads(payload.get("metadata", {}).get("config", "{}")).get("data") or {}
    except (TypeError, ValueError, AttributeError):
        data = {}
    found = {k: data[k] for k in ("num_classes", "class_names") if data.get(k) is not None}
    if "num_classes" not in found and isinstance(payload.get("model"), dict):
        n = payload["model"].get("num_classes") or (payload["model"].get("classifier") or {}).get("num_classes")
        if isinstance(n, int):
            found["num_classes"] = n
    legacy = str(data.get("_target_", "")).endswith("CIFAR10DataModule") or data.get("dataset") == "cifar10"
    if "class_names" not in found and legacy and found.get("num_classes", NUM_CLASSES) == NUM_CLASSES:
        found["class_names"] = list(CLASS_NAMES)
    return found


def fill_data_config(cfg, datamodule) -> None:
    """Write the values the run uses into the metadata keys cfg.data leaves null (data=npz), so the
    model config's interpolations (${data.num_classes}, ${data.mean}, ...), the evaluation, the report
    and the saved config all see them.

    When a checkpoint is evaluated, its own num_classes and class names come first (a test set
    need not hold every class); then what the datamodule reads off the files (ImageDataModule.info).
    """
    from omegaconf import open_dict

    missing = [k for k in METADATA_KEYS if cfg.data.get(k) is None]
    info = getattr(datamodule, "info", None)
    if not missing or not isinstance(info, DatasetInfo):
        return
    found = checkpoint_classes(cfg.checkpoint) if cfg.get("checkpoint") else {}
    if cfg.data.get("num_classes") is not None:  # the user's num_classes stands; names of another count do not
        found = {k: v for k, v in found.items() if k == "class_names" and len(v) == cfg.data.num_classes}
    num_classes = cfg.data.get("num_classes") or found.get("num_classes", info.num_classes)
    names = found.get("class_names")
    if names is None or len(names) != num_classes:
        names = info.class_names if len(info.class_names) == num_classes else _digits(num_classes)
    values = {"num_classes": num_classes, "image_size": list(info.image_size),
              "mean": None if info.mean is None else list(info.mean),
              "std": None if info.std is None else list(info.std), "class_names": list(names)}
    with open_dict(cfg.data):
        for key in missing:
            cfg.data[key] = values[key]


def check_model_on_data(model, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> int:
    """The model's number of classes, after checking that it takes these images and that the data's
    labels and num_classes fit its outputs (a clear error instead of a shape error deep in an attack)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:  # the global random state is left as it was (a model may sample, e.g. a purifier)
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            out = model(to_unit_float(images[:1].to(device)))
    except RuntimeError as err:
        raise ValueError(f"the model does not take the test images ({tuple(images.shape[1:])}, C x H x W): "
                         f"{str(err).splitlines()[0]}") from err
    classes = out.shape[1]
    if num_classes is not None and int(num_classes) != classes:
        raise ValueError(f"data.num_classes is {num_classes} but the model has {classes} outputs: a model "
                         f"trained on other data? (data.num_classes must match the model's)")
    if len(labels) and int(labels.max()) >= classes:
        raise ValueError(f"the test labels go up to {int(labels.max())} but the model has {classes} classes "
                         f"(labels must be in [0, {classes - 1}])")
    return classes
