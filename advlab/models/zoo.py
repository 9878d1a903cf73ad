"""RobustBench's model zoo by name: `model=robustbench model.name=Standard model.threat_model=Linf`.

    robustbench_model("Carmon2019Unlabeled", threat_model="Linf", dataset="cifar10", model_dir="models")

The architecture comes from the `robustbench` package (pip install 'advlab[zoo]'); the weights
from a local folder in RobustBench's layout, <model_dir>/<dataset>/<threat_model>/<name>.pt
(what robustbench.utils.load_model downloads there), fetched when missing and `download` is on
and the network allows.

The weights file is read here with torch.load(weights_only=True), so loading runs no code from
it: robustbench.utils.load_model calls torch.load without weights_only, which unpickles
arbitrary objects on torch before 2.6. The state_dict is then cleaned and loaded as
load_model does it (the prefixes "module." and "model.", the models known to miss keys).
RobustBench models take images in [0, 1] and normalise inside: their config says
`normalization: null`.
"""

import importlib
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from advlab.errors import UserError, UserFileError


def import_robustbench():
    """The robustbench package, with what its PyPI release 1.1.1 misses at import put right.

    It imports `autoattack` (the original AutoAttack, from GitHub) whose PyPI package is
    `pyautoattack`: that one stands in under the old name. It also imports pkg_resources,
    which setuptools 82 dropped (the zoo extra pins setuptools<82)."""
    try:
        importlib.import_module("autoattack")
    except ImportError:
        try:
            pyautoattack = importlib.import_module("pyautoattack")
            sys.modules.setdefault("autoattack", pyautoattack)
            sys.modules.setdefault("autoattack.state", importlib.import_module("pyautoattack.state"))
        except ImportError:
            pass  # robustbench's own import error below says what is missing
    try:
        with warnings.catch_warnings():  # its `import pkg_resources` warns that pkg_resources is deprecated
            warnings.simplefilter("ignore", UserWarning)
            import robustbench.utils  # noqa: F401
    except ImportError as error:
        raise UserError(f"model=robustbench needs the robustbench package ({error}): pip install 'advlab[zoo]'") \
            from error
    return sys.modules["robustbench"]


def weights_path(model_dir: str | os.PathLike, dataset: str, threat_model: str, name: str) -> Path:
    """Where RobustBench keeps a zoo model's weights: <model_dir>/<dataset>/<threat_model>/<name>.pt."""
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def robustbench_model(name: str, threat_model: str = "Linf", dataset: str = "cifar10",
                      model_dir: str | os.PathLike = "models", download: bool = True,
                      pretrained: bool = True) -> nn.Module:
    """A RobustBench zoo model in eval mode, its weights read safely from model_dir.

    pretrained=False: the architecture alone (a checkpoint is about to supply the weights)."""
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset
    from robustbench.utils import rm_substr_from_state_dict

    try:  # the zoo's loader, which knows the models whose files miss a few keys
        from robustbench.utils import _safe_load_state_dict
    except ImportError:
        def _safe_load_state_dict(model, name, state_dict, dataset):
            model.load_state_dict(state_dict)
            return model

    datasets = {d.value: d for d in BenchmarkDataset}
    if dataset not in datasets:
        raise UserError(f"model.dataset: RobustBench has no dataset {dataset!r}; it has {sorted(datasets)}")
    zoo = model_dicts[datasets[dataset]]
    threats = {t.value: t for t in zoo}
    if threat_model not in threats:
        raise UserError(f"model.threat_model: RobustBench has no {threat_model!r} models for {dataset}; "
                        f"it has {sorted(threats)}")
    models = zoo[threats[threat_model]]
    if name not in models:
        near = sorted(m for m in models if name.lower()[:4] in m.lower())[:10] or sorted(models)[:10]
        raise UserError(f"model.name: RobustBench has no {dataset} {threat_model} model {name!r} (of {len(models)}; "
                        f"e.g. {', '.join(near)})")
    entry = models[name]
    if isinstance(entry["gdrive_id"], list):
        raise UserError(f"model.name: {name} is an ensemble of {len(entry['gdrive_id'])} weight files; advlab loads "
                        "single-file zoo models only")
    model = entry["model"]()
    if not pretrained:
        return model.eval()
    path = weights_path(model_dir, dataset, threat_model, name)
    if not path.is_file():
        _download(entry["gdrive_id"], path, name, download)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - an unpickling refusal or a corrupt file
        raise UserFileError(f"model: cannot read RobustBench weights {path} with weights_only=True ({error})") \
            from error
    # What robustbench.utils.load_model does with the file's contents, for single-file models.
    if "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding":
        checkpoint = checkpoint["last"]
    state_dict = checkpoint["state_dict"] if isinstance(checkpoint, dict) and "state_dict" in checkpoint \
        else checkpoint
    state_dict = rm_substr_from_state_dict(rm_substr_from_state_dict(state_dict, "module."), "model.")
    if dataset == "imagenet" and not set(state_dict) & set(model.state_dict()):
        state_dict = {f"model.{k}": v for k, v in state_dict.items()}  # a normalisation wrapper around the model
    try:
        model = _safe_load_state_dict(model, name, state_dict, datasets[dataset])
    except RuntimeError as error:
        raise UserFileError(f"model: the weights in {path} do not fit RobustBench's {name} "
                            f"({str(error).splitlines()[0]} ...)") from error
    return model.eval()


def _download(gdrive_id, path: Path, name: str, download: bool) -> None:
    where = (f"no weights for RobustBench model {name} at {path}: put them there (RobustBench's layout "
             "<model_dir>/<dataset>/<threat_model>/<name>.pt; set model.model_dir)")
    if not download or gdrive_id is None:
        raise UserFileError(where + ("" if download else ", or allow model.download=true"))
    from robustbench.utils import download_gdrive_new

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_gdrive_new(gdrive_id, path)
    except Exception as error:  # noqa: BLE001 - offline, or the host refused
        path.unlink(missing_ok=True)
        raise UserFileError(f"{where}; downloading them failed ({type(error).__name__})") from error
    if not path.is_file():
        raise UserFileError(where + "; the download wrote nothing")
