"""A run's dataset facts, resolved once: the config's data keys, then the checkpoint being evaluated, then the
files; and the check that a model fits the data.

    info = resolve_dataset(cfg, datamodule)   # a DatasetInfo: the one object models, evaluation, figures and
                                             # reports read (its values are also written into cfg.data)
"""

import json
import os

import torch
from omegaconf import DictConfig, open_dict

from advlab.data.datasets import CLASS_NAMES, DATASETS, METADATA_KEYS, NUM_CLASSES, DatasetInfo, digits
from advlab.data.files import to_unit_float


def checkpoint_classes(path: str | os.PathLike) -> dict:
    """num_classes and class_names of the data a saved advlab model was trained on, as far as its file
    says ({} when it says nothing): its run's data config, else its model's num_classes (and CIFAR-10's
    names for models saved before datasets were configurable, which were all CIFAR-10's)."""
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


def resolve_dataset(cfg: DictConfig, datamodule=None) -> DatasetInfo | None:
    """The run's dataset facts, in one order: what cfg.data says; for what it leaves null, the checkpoint being
    evaluated (its classes: a test set need not hold every class), then the files (the datamodule's info).
    Without a datamodule only the config and checkpoint are read (before any data is), and None comes back when
    they do not tell the class count. The values found are written into the null keys of cfg.data, so the model
    config's interpolations (${data.num_classes}, ${data.mean}, ...) and the saved config see them too."""
    data = cfg.data
    given = {k: data.get(k) for k in METADATA_KEYS}
    found = checkpoint_classes(cfg.checkpoint) if cfg.get("checkpoint") else {}
    if given["num_classes"] is not None:  # the user's num_classes stands; names of another count do not
        found = {k: v for k, v in found.items() if k == "class_names" and len(v) == given["num_classes"]}
    files = getattr(datamodule, "info", None) if datamodule is not None else None
    files = files if isinstance(files, DatasetInfo) else None
    num_classes = given["num_classes"] or found.get("num_classes")
    if num_classes is None and given["class_names"] is not None:  # named classes: as many as they name
        num_classes = len(given["class_names"])
    if num_classes is None:
        num_classes = files.num_classes if files else None
    if num_classes is None:
        return None
    names = given["class_names"] or found.get("class_names")
    if names is None or len(names) != num_classes:
        names = files.class_names if files and len(files.class_names) == num_classes else digits(num_classes)
    name = data.get("dataset") or "cifar10"
    known = DATASETS.get(name)
    info = DatasetInfo(
        name, int(num_classes), tuple(given["image_size"] or (files.image_size if files else (0, 0))),
        _tuple(given["mean"] if given["mean"] is not None else files.mean if files else None),
        _tuple(given["std"] if given["std"] is not None else files.std if files else None),
        tuple(str(n) for n in names), hflip=known.hflip if known else True,
        display_name=known.display_name if known else name)
    if files is not None:
        _fill(cfg, info)
    return info


def _tuple(value):
    return None if value is None else tuple(value)


def _fill(cfg: DictConfig, info: DatasetInfo) -> None:
    """Write info's values into the metadata keys cfg.data leaves null."""
    values = {"num_classes": info.num_classes, "image_size": list(info.image_size),
              "mean": None if info.mean is None else list(info.mean),
              "std": None if info.std is None else list(info.std), "class_names": list(info.class_names)}
    with open_dict(cfg.data):
        for key in METADATA_KEYS:
            if cfg.data.get(key) is None:
                cfg.data[key] = values[key]


def check_model_on_data(model, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> int:
    """The model's number of classes, after checking that it takes these images and that the data's
    labels and num_classes fit its outputs (a clear error instead of a shape error deep in an attack)."""
    from advlab.evaluation.robustness import infer_num_classes  # the one way to count a model's classes

    try:
        classes = infer_num_classes(model, to_unit_float(images[:1]))
    except RuntimeError as err:
        raise ValueError(f"the model does not take the test images ({tuple(images.shape[1:])}, C x H x W): "
                         f"{str(err).splitlines()[0]}") from err
    if num_classes is not None and int(num_classes) != classes:
        raise ValueError(f"data.num_classes is {num_classes} but the model has {classes} outputs: a model "
                         f"trained on other data? (data.num_classes must match the model's)")
    if len(labels) and int(labels.max()) >= classes:
        raise ValueError(f"the test labels go up to {int(labels.max())} but the model has {classes} classes "
                         f"(labels must be in [0, {classes - 1}])")
    return classes
