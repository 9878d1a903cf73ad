"""PreActResNet-18 and WideResNet: the published architectures, the registry, the yaml files, checkpoints."""

import pytest
import torch
from omegaconf import OmegaConf

import advlab
from advlab.checkpoint import save_checkpoint
from advlab.models import MODELS, PreActResNet18, WideResNet, build_model
from helpers import REPO, config

CONF = REPO / "conf" / "model"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The counts the literature reports: WRN-34-10 46.16M (TRADES, RobustBench), PreActResNet-18 11.17M.
@pytest.mark.parametrize("yaml_name, expected", [("preact_resnet18", 11_172_170), ("wide_resnet", 46_160_474)])
def test_the_yaml_files_build_the_standard_models(yaml_name, expected):
    # composed: the model config reads num_classes and mean/std from the data config (CIFAR-10 by default)
    cfg = OmegaConf.to_container(config(f"model={yaml_name}").model, resolve=True)
    assert cfg["name"] == yaml_name and yaml_name in MODELS
    model = build_model(**cfg)
    assert n_params(model) == expected


def test_wide_resnet_depth_and_width_set_the_blocks_and_channels():
    model = WideResNet(depth=16, widen_factor=2)
    assert len(model.blocks) == 3 * 2, "(16 - 4) / 6 = 2 blocks in each of 3 groups"
    assert [b.conv2.out_channels for b in model.blocks] == [32, 32, 64, 64, 128, 128]
    assert model.linear.in_features == 128


@pytest.mark.parametrize("depth", [33, 4, 0, 30, 12.5])
def test_wide_resnet_refuses_a_depth_that_is_not_6n_plus_4(depth):
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 4 .*10, 16, 22, 28, 34"):
        WideResNet(depth=depth, widen_factor=1)


@pytest.mark.parametrize("factory, kwargs, match", [
    (WideResNet, {"widen_factor": 0}, "widen_factor"),
    (WideResNet, {"depth": 10, "dropout": 1.0}, "dropout"),
    (WideResNet, {"depth": 10, "num_classes": 0}, "num_classes"),
    (PreActResNet18, {"width": 0}, "width"),
    (PreActResNet18, {"num_classes": 0}, "num_classes"),
])
def test_bad_arguments_name_the_parameter(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


SLIM = [("preact_resnet18", {"width": 8}), ("wide_resnet", {"depth": 10, "widen_factor": 1})]


@pytest.mark.parametrize("name, slim", SLIM)
def test_slim_models_from_the_registry_give_logits_and_input_gradients(name, slim):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **slim).eval()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 7)
    assert not torch.allclose(out.exp().sum(1), torch.ones(3)), "logits, not log-probabilities"
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, "attacks need a gradient with respect to the input"


@pytest.mark.parametrize("name, slim", SLIM)
def test_normalisation_is_the_first_layer(name, slim):
    torch.manual_seed(0)
    with_norm = build_model(name, **slim).eval()
    without = build_model(name, normalize=False, **slim).eval()
    without.load_state_dict({k: v for k, v in with_norm.state_dict().items() if not k.startswith("normalize.")})
    x = torch.rand(2, 3, 32, 32)
    expected = without((x - with_norm.normalize.mean) / with_norm.normalize.std)
    assert torch.allclose(with_norm(x), expected, atol=1e-5)


def test_wide_resnet_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen_factor=1, dropout=0.3)
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(model.train()(x), model(x))
    assert torch.equal(model.eval()(x), model(x))


def test_slim_preact_resnet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    args = {"name": "preact_resnet18", "width": 8}
    model = build_model(**args)
    model.train()(torch.rand(16, 3, 32, 32))  # moves the batch-norm running statistics off their defaults
    path = save_checkpoint(tmp_path / "model.pt", model, args)
    loaded = advlab.load(path)
    assert isinstance(loaded, PreActResNet18) and not loaded.training
    assert loaded.layers[0].conv1.out_channels == 8
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x))
