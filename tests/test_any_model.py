"""Any model from the command line and from Python: `_target_` models (torchvision, a user's module),
the weights files `checkpoint=` reads, RobustBench zoo models, advlab.evaluate's DataLoaders and
tuple/dict outputs."""

import importlib.util
import json
import os
import pickle

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import advlab
from advlab.checkpoint import load, read_weights, save_checkpoint
from advlab.cli import run
from advlab.data import load_split, to_unit_float
from advlab.errors import UserError
from advlab.models import build_model
from advlab.models.adapter import AdaptedModel

from helpers import SMOKE, TinyNet, advlab_cli, config

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
TINY = {"_target_": "helpers.TinyNet", "num_classes": 10, "normalization": {"mean": MEAN, "std": STD}}
RESNET = {"_target_": "torchvision.models.resnet18", "num_classes": 10, "normalization": {"mean": MEAN, "std": STD}}
# A cheap evaluation: FGSM alone, no checks, few images.
CHEAP = ["logger=none", "evaluation.attacks=[fgsm]", "evaluation.eps=[0.0,0.01]", "evaluation.checks.enabled=false",
         "data.max_test_images=20", "evaluation.num_examples=2"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _tiny(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(**TINY).eval()


def _x(n=4, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_target_models_are_adapted_with_the_declared_normalisation():
    torch.manual_seed(0)
    model = build_model(**RESNET).eval()
    assert isinstance(model, AdaptedModel) and isinstance(model.model, torchvision.models.ResNet)
    assert set(model.state_dict()) == {f"model.{k}" for k in model.model.state_dict()}, "mean/std come from the config"
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(model(x), model.model((x - mean) / std), atol=1e-6)
    # the registry form goes through the same builder, unchanged (no wrapper); `normalization` is the one
    # spelling for every model: a registered model with a normalisation layer of its own gets it there
    assert type(build_model("seed_cnn")).__name__ == "SeedCNN"
    own = build_model(name="seed_cnn", normalization={"mean": MEAN, "std": STD})
    assert type(own).__name__ == "SeedCNN" and torch.allclose(own.normalize.std.flatten(), torch.tensor(STD))
    assert type(build_model(name="lipschitz_cnn", normalization={"mean": MEAN, "std": STD})) is AdaptedModel


def test_the_torchvision_and_robustbench_yaml_compose():
    from advlab.build import check_config, plain

    cfg = config("model=torchvision_resnet18")
    check_config(cfg)
    spec = plain(cfg.model)
    assert spec["_target_"] == "torchvision.models.resnet18" and spec["num_classes"] == 10
    assert len(spec["normalization"]["mean"]) == 3
    assert build_model(**spec).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    rb = plain(config("model=robustbench").model)
    assert (rb["name"], rb["threat_model"], rb["dataset"], rb["normalization"]) == ("Standard", "Linf", "cifar10", None)


@pytest.mark.parametrize("override, match", [
    ("model._target_=no_such_module.Net", "model._target_: cannot import 'no_such_module.Net'"),
    ("model.normalization.std=[0.2,0.0,0.2]", "std must be positive"),
    ("+model.normalization.scale=2", "expected .mean: .*, std: .*. or null"),
])
def test_bad_model_configs_fail_early_with_the_key(override, match):
    from advlab.build import check_config

    with pytest.raises(ValueError, match=match):
        check_config(config("model=torchvision_resnet18", override))


@pytest.mark.parametrize("output", ["tuple", "dict"])
def test_tuple_and_dict_outputs_become_logits(output):
    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            logits = self.inner(x)
            return (logits, logits.detach() * 0) if output == "tuple" else {"logits": logits, "features": x.mean()}

    plain = _tiny()
    x, y = _x(8), torch.arange(8)
    expected = advlab.evaluate(plain, x, y, eps=[0.0, 0.05], attacks=["fgsm", "pgd"], checks=False)
    got = advlab.evaluate(Wrapped(plain), x, y, eps=[0.0, 0.05], attacks=["fgsm", "pgd"], checks=False)
    assert got.clean == expected.clean and got.robustness == expected.robustness


def test_evaluate_takes_a_dataloader():
    model, x, y = _tiny(), _x(10), torch.arange(10)
    expected = advlab.evaluate(model, x, y, eps=[0.0, 0.05], attacks=["fgsm"], checks=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    got = advlab.evaluate(model, loader, eps=[0.0, 0.05], attacks=["fgsm"], checks=False)
    assert got.n_images == 10 and got.clean == expected.clean and got.robustness == expected.robustness
    with pytest.raises(TypeError, match="leave labels out"):
        advlab.evaluate(model, loader, y, eps=[0.0])
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        advlab.evaluate(model, DataLoader(TensorDataset(x), batch_size=3), eps=[0.0])


def test_a_plain_state_dict_pth_loads_into_the_configured_model(tmp_path):
    model, x = _tiny(), _x()
    torch.save(model.model.state_dict(), tmp_path / "tiny.pth")  # the user's model's own keys
    assert torch.equal(load(tmp_path / "tiny.pth", model=TINY)(x), model(x))
    # a training script's dict around it, with DataParallel's prefix
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.model.state_dict().items()}},
               tmp_path / "wrapped.pt")
    assert torch.equal(load(tmp_path / "wrapped.pt", model=TINY)(x), model(x))


def test_a_safetensors_file_loads_into_the_configured_model(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model, x = _tiny(), _x()
    safetensors.save_file(model.model.state_dict(), tmp_path / "tiny.safetensors")
    assert read_weights(tmp_path / "tiny.safetensors").kind == "safetensors"
    assert torch.equal(load(tmp_path / "tiny.safetensors", model=TINY)(x), model(x))


def test_advlab_model_pt_records_the_target_and_rebuilds_it(tmp_path):
    model, x = _tiny(), _x()
    save_checkpoint(tmp_path / "model.pt", model, TINY)
    loaded = advlab.load(tmp_path / "model.pt")  # no model config needed: the file records it
    assert isinstance(loaded, AdaptedModel) and isinstance(loaded.model, TinyNet)
    assert torch.equal(loaded(x), model(x)) and not loaded.training


def test_a_checkpoint_calls_only_targets_that_build_models(tmp_path):
    save_checkpoint(tmp_path / "evil.pt", _tiny(), {"_target_": "os.system", "command": "echo pwned"})
    with pytest.raises(UserError, match="'os.system', which is not an nn.Module class"):
        advlab.load(tmp_path / "evil.pt")


def test_wrong_formats_say_what_was_expected_and_what_was_found(tmp_path):
    expected = "advlab reads advlab's model.pt, a state_dict saved with torch.save .*, a .safetensors file, or a " \
               "Lightning .ckpt of an advlab run"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match=f"holds a list; {expected}"):
        load(tmp_path / "list.pt", model=TINY)
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(UserError, match=f"torch.load.weights_only=True. refused it .*; {expected}"):
        load(tmp_path / "text.pt", model=TINY)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Exploit()}, f)
    with pytest.raises(UserError, match="holds objects other than tensors and plain values"):
        load(tmp_path / "evil.pt", model=TINY)

    torch.save(_tiny().model.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(UserError, match="is not an advlab checkpoint but a state_dict, which holds weights only: "
                                        "give the model they belong to .model=..."):
        load(tmp_path / "tiny.pt")
    with pytest.raises(UserError, match=r"does not fit model.name=seed_cnn: \d+ missing keys \(conv1.bias, .*\), "
                                        r"\d+ unexpected keys \(net.0.bias, .*\); choose the model"):
        load(tmp_path / "tiny.pt", model={"name": "seed_cnn"})
    with pytest.raises(UserError, match=r"does not fit model._target_=helpers.TinyNet: 2 tensors have other shapes "
                                        r"\(size mismatch for net.5.weight"):
        load(tmp_path / "tiny.pt", model={**TINY, "num_classes": 5})
    with pytest.raises(UserError, match="checkpoint=pretrained: model.name=seed_cnn loads no weights of its own"):
        load("pretrained", model={"name": "seed_cnn"})


def test_a_target_model_trains_and_evaluates_like_a_registered_one(cifar_root, tmp_path):
    """model=torchvision_resnet18 with a small user module in its place: trained, evaluated, saved; its
    model.pt and its Lightning last.ckpt both reload it, the .ckpt also into a config given by hand."""
    results = run(config("+experiment=baseline", "model=torchvision_resnet18", "model._target_=helpers.TinyNet",
                         *SMOKE, *CHEAP, f"data.root={cifar_root}", f"+output_dir={tmp_path}"))
    assert results.n_images == 20 and results.config["model"]["_target_"] == "helpers.TinyNet"
    x = _x(4, 32)
    from_model_pt = advlab.load(tmp_path / "model.pt")
    assert isinstance(from_model_pt.model, TinyNet)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert read_weights(ckpt).kind == "lightning"
    from_ckpt = advlab.load(ckpt)
    assert torch.equal(from_ckpt(x), from_model_pt(x))
    # a Lightning checkpoint without the run's config (hyperparameters): the weights go into the model given
    payload = torch.load(ckpt, weights_only=True)
    payload.pop("hyper_parameters", None)
    torch.save(payload, tmp_path / "bare.ckpt")
    assert read_weights(tmp_path / "bare.ckpt").model is None
    spec = results.config["model"]
    assert torch.equal(load(tmp_path / "bare.ckpt", model=spec)(x), from_model_pt(x))


def _first_test_images(cifar_root, n=20):
    x, y = load_split(cifar_root, "test")
    return to_unit_float(x[:n]), y[:n]


def test_a_torchvision_resnet18_state_dict_evaluates_from_the_config(cifar_root, tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "eval"
    results = run(config("+experiment=evaluate", "model=torchvision_resnet18", f"checkpoint={tmp_path / 'resnet18.pth'}",
                         *CHEAP, f"data.root={cifar_root}", f"+output_dir={out}"))
    x, y = _first_test_images(cifar_root)
    mean, std = [torch.tensor(v).view(1, 3, 1, 1) for v in (config().data.mean, config().data.std)]
    with torch.no_grad():
        correct = int((resnet((x - mean) / std).argmax(1) == y).sum())
    assert results.clean.successes == correct and results.n_images == 20
    saved = json.loads((out / "results.json").read_text())
    assert saved["training"] == {"checkpoint": str(tmp_path / "resnet18.pth")}
    assert (out / "report.html").stat().st_size > 0 and not (out / "model.pt").exists()


@pytest.mark.slow
def test_evaluate_a_torchvision_resnet18_from_the_command_line(cifar_root, tmp_path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "eval"
    proc = advlab_cli("+experiment=evaluate", "model=torchvision_resnet18", f"checkpoint={tmp_path / 'resnet18.pth'}",
                      *CHEAP, f"hydra.run.dir={out}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["n_images"] == 20 and set(results["robustness"]["accuracy"]) >= {"fgsm", "worst_case"}
    assert (out / "report.html").stat().st_size > 0
    # weights that are not the model's: one line naming the file, the model and the keys
    proc = advlab_cli("+experiment=evaluate", f"checkpoint={tmp_path / 'resnet18.pth'}", *CHEAP,
                      f"hydra.run.dir={tmp_path / 'wrong'}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode != 0
    assert "does not fit model.name=seed_cnn" in proc.stderr and "missing keys" in proc.stderr


# RobustBench: the smallest single-file CIFAR-10 L-inf zoo architecture (5.8M parameters), random weights
# saved in RobustBench's layout; nothing is downloaded.
ZOO_NAME = "Ding2020MMA"


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    if importlib.util.find_spec("robustbench") is None:  # the zoo extra (CI installs it with .[test])
        pytest.skip("robustbench is not installed (pip install 'advlab[zoo]')")
    from advlab.models.zoo import import_robustbench, weights_path

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    model = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][ZOO_NAME]["model"]()
    root = tmp_path_factory.mktemp("robustbench_models")
    path = weights_path(root, "cifar10", "Linf", ZOO_NAME)
    path.parent.mkdir(parents=True)
    # As the zoo's files often are: a dict around the state_dict, keys with DataParallel's prefix.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return root


def test_a_robustbench_zoo_model_loads_its_local_weights_as_robustbench_does(zoo_dir):
    from robustbench.utils import load_model

    from advlab.build import plain

    spec = plain(config("model=robustbench", f"model.name={ZOO_NAME}", f"model.model_dir={zoo_dir}",
                        "model.download=false").model)
    ours = build_model(**spec)
    theirs = load_model(ZOO_NAME, model_dir=zoo_dir, dataset="cifar10", threat_model="Linf")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    with pytest.raises(UserError, match=r"no weights for RobustBench model Standard at .*cifar10/Linf/Standard.pt: "
                                        "put them there"):
        build_model(**{**spec, "name": "Standard"})
    with pytest.raises(UserError, match="RobustBench has no cifar10 Linf model 'NoSuchModel'"):
        build_model(**{**spec, "name": "NoSuchModel"})


def test_a_robustbench_zoo_model_evaluates_with_checkpoint_pretrained(zoo_dir, cifar_root, tmp_path):
    results = run(config("+experiment=evaluate", "model=robustbench", f"model.name={ZOO_NAME}",
                         f"model.model_dir={zoo_dir}", "model.download=false", "checkpoint=pretrained", *CHEAP,
                         "data.max_test_images=8", f"data.root={cifar_root}", f"+output_dir={tmp_path}"))
    assert results.n_images == 8 and results.config["model"]["name"] == ZOO_NAME


@pytest.mark.slow
def test_evaluate_a_robustbench_zoo_model_from_the_command_line(zoo_dir, cifar_root, tmp_path):
    proc = advlab_cli("+experiment=evaluate", "model=robustbench", f"model.name={ZOO_NAME}",
                      f"model.model_dir={zoo_dir}", "model.download=false", "checkpoint=pretrained", *CHEAP,
                      "data.max_test_images=8", f"hydra.run.dir={tmp_path}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n_images"] == 8 and results["config"]["model"]["_target_"] == "advlab.models.zoo.robustbench_model"
