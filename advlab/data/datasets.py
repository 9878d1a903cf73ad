"""The named datasets' facts, each written once: one DatasetInfo per dataset in DATASETS.

Everything that needs to know a dataset reads it here: the configs (conf/data/base.yaml reads the
metadata keys through the ${dataset:NAME,KEY} resolver, advlab/resolvers.py), the models' normalisation
defaults, the data module, the evaluation, the figures and the reports (`display_name`).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    """What the model, attacks, figures and reports need to know about a dataset, and where its files are."""

    name: str
    num_classes: int
    image_size: tuple[int, int]  # height, width
    mean: tuple[float, ...] | None  # per-channel statistics of the training set on the [0, 1] scale
    std: tuple[float, ...] | None
    class_names: tuple[str, ...]
    hflip: bool = True  # a horizontal flip keeps the class (not for digits)
    display_name: str = ""  # as the reports write it ("CIFAR-10"); the name when empty
    root_variable: str = "ADVLAB_DATA"  # the environment variable naming its folder
    default_root: str = "data"  # the folder when neither data.root nor the variable is set
    torchvision_files: str = ""  # what torchvision reads there (the download form)

    @property
    def title(self) -> str:
        return self.display_name or self.name


def digits(n: int) -> tuple[str, ...]:
    """Class names "0", "1", ... for n classes (digits, or data whose classes have no names)."""
    return tuple(str(i) for i in range(n))


CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
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
        CIFAR10_CLASS_NAMES, display_name="CIFAR-10", root_variable="ADVLAB_DATA", default_root="data",
        torchvision_files="torchvision's folder cifar-10-batches-py/"),
    "cifar100": DatasetInfo(
        "cifar100", 100, (32, 32), (0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047),
        CIFAR100_CLASS_NAMES, display_name="CIFAR-100", root_variable="ADVLAB_CIFAR100", default_root="data/cifar100",
        torchvision_files="torchvision's folder cifar-100-python/"),
    "svhn": DatasetInfo(
        "svhn", 10, (32, 32), (0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614),
        digits(10), hflip=False, display_name="SVHN", root_variable="ADVLAB_SVHN", default_root="data/svhn",
        torchvision_files="torchvision's files train_32x32.mat and test_32x32.mat"),
}
DATASET_NAMES = (*DATASETS, "npz")  # npz: any arrays the user names, its facts read off the files
METADATA_KEYS = ("num_classes", "image_size", "mean", "std", "class_names")  # the data config's keys for them

# CIFAR-10, the default dataset: kept for code written before the other datasets.
CLASS_NAMES = DATASETS["cifar10"].class_names
NUM_CLASSES = DATASETS["cifar10"].num_classes


def dataset_info(name: str) -> DatasetInfo:
    """The facts of a named dataset (cifar10, cifar100, svhn)."""
    if name not in DATASETS:
        raise ValueError(f"data.dataset must be one of {DATASET_NAMES}, got {name!r}")
    return DATASETS[name]


def metadata(name: str, key: str):
    """One of a dataset's METADATA_KEYS as a config value (lists, not tuples); None for npz, whose facts come
    from the files. The ${dataset:NAME,KEY} resolver of conf/data/base.yaml."""
    if key not in METADATA_KEYS:
        raise ValueError(f"${{dataset:{name},{key}}}: unknown key; known: {', '.join(METADATA_KEYS)}")
    if name == "npz":
        return None
    value = getattr(dataset_info(name), key)
    return list(value) if isinstance(value, tuple) else value


def resolve_root(root: str | os.PathLike | None, dataset: str = "cifar10") -> Path:
    """`root`, else the dataset's environment variable (CIFAR-10: ADVLAB_DATA), else its default folder
    (./data, ./data/cifar100, ./data/svhn); made absolute."""
    info = DATASETS.get(dataset, DATASETS["cifar10"])
    chosen = root or os.environ.get(info.root_variable) or info.default_root
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
