"""1-Lipschitz networks: the bound is honest, certification agrees with attacks, the estimate is right."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from advlab.attacks import pgd
from advlab.data import load_split, to_unit_float
from advlab.defenses.lipschitz import (
    LipschitzMarginLoss,
    certified_accuracy,
    certified_radius,
    lipschitz_margin_loss,
)
from advlab.evaluation.lipschitz import layer_spectral_norm, lipschitz_estimate
from advlab.models.lipschitz import AOLConv2d, AOLLinear, LipschitzCNN, MaxMin
from advlab.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from helpers import REPO, config

EPS = 36 / 255  # the usual L2 radius for certified CIFAR-10 results


def _train_lipschitz(cifar_root, steps: int = 120) -> LipschitzCNN:
    """LipschitzCNN after `steps` Adam steps of the margin loss on 2000 real training images."""
    torch.manual_seed(0)
    model = LipschitzCNN(width=16, depth=1)
    x, y = load_split(cifar_root, "train")
    x, y = to_unit_float(x[:2000]), y[:2000]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps)
    model.train()
    step = 0
    while step < steps:
        for idx in torch.randperm(len(x)).split(64)[: steps - step]:
            loss = lipschitz_margin_loss(model(x[idx]), y[idx], eps=EPS, temperature=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
    opt.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def trained_lipschitz(cifar_root):
    return _train_lipschitz(cifar_root)


@pytest.fixture
def untrained_lipschitz():
    torch.manual_seed(0)
    model = LipschitzCNN(width=8, depth=1, hidden=16)
    with torch.no_grad():  # far from the near-identity initialisation: what AOL must bound is any weight
        for p in model.parameters():
            p.normal_()
    return model.eval()


def _worst_ratio(model: nn.Module, x: torch.Tensor, x2: torch.Tensor) -> float:
    """max over pairs of ||f(x) - f(x')|| / ||x - x'||, in float64 so rounding cannot hide a violation."""
    model = copy.deepcopy(model).double().eval()
    x, x2 = x.double(), x2.double()
    with torch.no_grad():
        num = (model(x) - model(x2)).norm(dim=1)
    return float((num / (x - x2).flatten(1).norm(dim=1)).max())


def _pairs(model: nn.Module, n: int = 16, seed: int = 0):
    """Far pairs (independent uniform images), near pairs (1e-4 apart, random direction) and
    worst near pairs (1e-4 apart along the Jacobian's top singular direction at x)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64)
    far = torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64)
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    near = x + 1e-4 * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    top = _top_direction(copy.deepcopy(model).double(), x)
    worst = x + 1e-4 * top
    return x, {"far": far, "near": near, "worst near": worst}


def _top_direction(model: nn.Module, x: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Unit top right-singular vector of each image's Jacobian (power iteration with
    torch.autograd.functional, independently of advlab's estimator)."""
    model.eval()
    v = torch.randn_like(x)
    for _ in range(iters):
        _, jv = torch.autograd.functional.jvp(model, x, v)
        _, v = torch.autograd.functional.vjp(model, x, jv)
        v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return v.detach()


# (1) The declared bound holds on pairs of inputs.

@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_bound_holds_on_far_near_and_worst_case_pairs(which, request):
    model = request.getfixturevalue("untrained_lipschitz" if which == "untrained" else "trained_lipschitz")
    x, pairs = _pairs(model)
    for name, x2 in pairs.items():
        ratio = _worst_ratio(model, x, x2)
        assert ratio <= model.lipschitz_constant * (1 + 1e-9), f"{which}, {name} pairs: ratio {ratio}"
    # The worst-direction pairs are the sharp test: they come close to the local norm.
    assert _worst_ratio(model, x, pairs["worst near"]) > 0.9 * _worst_ratio(model, x, pairs["near"])


def test_pair_check_catches_a_bound_broken_by_std_normalisation(trained_lipschitz):
    """The mistake the model avoids: dividing by the std multiplies the constant by ~4.
    With the same declared bound of 1, the pair check must fail."""
    broken = nn.Sequential(Normalize((0.0, 0.0, 0.0), CIFAR10_STD), trained_lipschitz)
    x, pairs = _pairs(broken, n=8)
    assert _worst_ratio(broken, x, pairs["worst near"]) > 1.0


def test_model_shape_and_declared_constant():
    model = LipschitzCNN()
    assert model(torch.rand(5, 3, 32, 32)).shape == (5, 10)
    assert model.lipschitz_constant == 1.0
    assert torch.allclose(model.mean.flatten(), torch.tensor(CIFAR10_MEAN))


def test_config_builds_the_model():
    cfg = OmegaConf.to_container(config("model=lipschitz_cnn").model, resolve=True)
    assert cfg.pop("name") == "lipschitz_cnn"
    assert LipschitzCNN(**cfg)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_maxmin_sorts_each_pair_of_channels():
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    assert torch.equal(MaxMin()(x), torch.tensor([[3.0, 0.5, 1.0, -2.0]]))


# (2) Every layer has operator norm <= 1 (power iteration, which converges from below).

def _layers_with_input_shapes(model: nn.Module, x: torch.Tensor):
    shapes, hooks = {}, []
    for layer in model.modules():
        if isinstance(layer, (AOLConv2d, AOLLinear)):
            hooks.append(layer.register_forward_hook(
                lambda m, inp, out: shapes.update({m: tuple(inp[0].shape[1:])})))  # returns None: output kept
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_every_layer_of_the_model_has_norm_at_most_one(which, request):
    model = request.getfixturevalue("untrained_lipschitz" if which == "untrained" else "trained_lipschitz")
    shapes = _layers_with_input_shapes(model, torch.rand(1, 3, 32, 32))
    assert len(shapes) == (7 if which == "trained" else 8)
    for layer, shape in shapes.items():
        norm = layer_spectral_norm(layer, shape, iters=50)
        assert norm <= 1 + 1e-5, f"{layer} on {shape}: {norm}"
        assert norm > 0.1, "the bound is not bought by crushing the signal"


@pytest.mark.parametrize("kernel_size,size", [(3, 8), (5, 3), (5, 1), (1, 4)])
def test_aol_conv_bounds_random_kernels_even_on_tiny_images(kernel_size, size):
    """Zero padding on an image smaller than the kernel is where a wrong conv bound shows."""
    torch.manual_seed(kernel_size * 10 + size)
    layer = AOLConv2d(6, 4, kernel_size)
    with torch.no_grad():
        layer.weight.normal_()
    assert layer_spectral_norm(layer, (6, size, size), iters=100) <= 1 + 1e-5
    raw = nn.Conv2d(6, 4, kernel_size, padding=kernel_size // 2, bias=False)
    with torch.no_grad():
        raw.weight.copy_(layer.weight)
    assert layer_spectral_norm(raw, (6, size, size), iters=100) > 1, "without AOL the same kernel exceeds 1"


@pytest.mark.parametrize("shape", [(10, 40), (40, 10), (16, 16)])
def test_aol_linear_bounds_random_matrices_either_side(shape):
    torch.manual_seed(0)
    layer = AOLLinear(shape[1], shape[0])
    with torch.no_grad():
        layer.weight.normal_(mean=0.3)  # correlated columns: far from orthogonal
    exact = torch.linalg.matrix_norm(layer.rescaled_weight().detach(), 2)
    assert exact <= 1 + 1e-6
    assert torch.linalg.matrix_norm(layer.weight.detach(), 2) > 1


def test_identity_initialisation_is_an_isometry():
    torch.manual_seed(0)
    layer = AOLConv2d(8, 8, 3)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(8), range(8), 1, 1] = 1.0
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(layer(x) - layer.bias.view(1, -1, 1, 1), x, atol=1e-6)


# (3) The power-iteration estimate.

def test_estimate_equals_the_spectral_norm_of_a_linear_model():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 4 * 4, 10).double()
    model = nn.Sequential(nn.Flatten(), linear)
    est = lipschitz_estimate(model, torch.rand(4, 3, 4, 4, dtype=torch.float64), iters=100)
    exact = torch.linalg.matrix_norm(linear.weight.detach(), 2)
    assert est.per_image.shape == (4,)
    assert torch.allclose(est.per_image, exact.expand(4), rtol=1e-8)
    assert est.max == pytest.approx(float(exact), rel=1e-8)
    assert layer_spectral_norm(linear.weight, (48,), iters=100) == pytest.approx(float(exact), rel=1e-8)


def test_estimate_stays_below_the_declared_constant(trained_lipschitz, test_images):
    model = copy.deepcopy(trained_lipschitz).train()
    est = lipschitz_estimate(model, test_images[0][:16], iters=20)
    assert model.training, "the caller's mode is restored"
    assert all(p.grad is None for p in model.parameters())
    assert 0.1 < est.max <= model.lipschitz_constant + 1e-5
    assert est.max == float(est.per_image.max())


def test_estimate_uses_eval_mode_and_leaves_no_gradients(tiny_model, synthetic_batch):
    """A batch-norm model: in train mode the images of a batch would not be independent."""
    x, _ = synthetic_batch
    tiny_model.train()
    est = lipschitz_estimate(tiny_model, x, iters=10)
    assert tiny_model.training
    assert all(p.grad is None for p in tiny_model.parameters())
    # Each image's estimate does not depend on the rest of the batch.
    alone = lipschitz_estimate(tiny_model, x[:1], iters=10)
    assert alone.per_image[0] == pytest.approx(float(est.per_image[0]), rel=1e-3)


# (4) Certified accuracy never exceeds accuracy under attack.

def test_certified_accuracy_is_below_pgd_robust_accuracy_on_real_images(trained_lipschitz, test_images):
    x, y = test_images[0][:200], test_images[1][:200]
    model = trained_lipschitz
    with torch.no_grad():
        logits = model(x)
    certified = certified_radius(logits, y, model.lipschitz_constant) > EPS
    x_adv = pgd(model, x, y, eps=EPS, steps=10, norm="l2", loss="margin")
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= EPS + 1e-5
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert not (certified & ~robust).any(), "an image PGD fooled was certified: the bound is wrong"
    rate = certified_accuracy(model, x, y, EPS)
    assert rate.successes == int(certified.sum()) and rate.n == 200
    assert rate.value >= 0.12, f"the short training should certify some images, got {rate}"
    assert rate.value <= robust.float().mean() <= (logits.argmax(1) == y).float().mean()
    # Radius 0 certifies exactly the correctly classified images; larger radii certify fewer.
    assert certified_accuracy(model, x, y, 0.0).successes == int((logits.argmax(1) == y).sum())
    assert certified_accuracy(model, x, y, 2 * EPS).successes <= rate.successes


# (5) Radii by hand.

def test_certified_radius_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [0.5, 0.0, 4.0]])
    y = torch.tensor([0, 0, 0, 2])
    # margins 2, -2 (wrong), 0 (tie: not certified), 3.5
    expected = torch.tensor([2 / math.sqrt(2), 0.0, 0.0, 3.5 / math.sqrt(2)])
    assert torch.allclose(certified_radius(logits, y, 1.0), expected)
    assert torch.allclose(certified_radius(logits, y, 2.0), expected / 2)
    # log-probabilities give the same margins
    assert torch.allclose(certified_radius(F.log_softmax(logits, 1), y, 1.0), expected, atol=1e-6)


class _FixedLogits(nn.Module):
    lipschitz_constant = 0.5

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits[: len(x)]


def test_certified_accuracy_by_hand_uses_the_declared_constant():
    model = _FixedLogits(torch.tensor([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]]))
    x, y = torch.rand(3, 3, 2, 2), torch.tensor([0, 0, 0])
    # margins 2, -2, 1 with L = 0.5: radii 2·sqrt(2), 0, sqrt(2)
    assert certified_accuracy(model, x, y, 1.4).successes == 2
    assert certified_accuracy(model, x, y, 1.5).successes == 1
    assert certified_accuracy(model, x, y, 1.4, lipschitz_constant=1.0).successes == 1  # radii sqrt(2), 0, 0.71
    assert certified_accuracy(model, x, y, 2.9).value == 0.0


def test_margin_loss_is_cross_entropy_on_offset_logits():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    assert torch.allclose(lipschitz_margin_loss(logits, y, eps=0.0, temperature=1.0), F.cross_entropy(logits, y))
    offset = logits - math.sqrt(2) * 2.0 * 0.1 * F.one_hot(y, 10)
    assert torch.allclose(lipschitz_margin_loss(logits, y, eps=0.1, lipschitz_constant=2.0, temperature=0.5),
                          0.5 * F.cross_entropy(offset / 0.5, y))


def test_margin_loss_object_uses_the_models_declared_constant():
    torch.manual_seed(0)
    model = _FixedLogits(torch.randn(4, 10))  # declares L = 0.5
    x, y = torch.rand(4, 3, 2, 2), torch.randint(0, 10, (4,))
    loss, outputs = LipschitzMarginLoss(eps=0.2, temperature=0.5)(model, x, y)
    assert torch.equal(outputs["clean"], model.logits)
    assert torch.allclose(loss, lipschitz_margin_loss(model.logits, y, 0.2, 0.5, 0.5))
    assert not LipschitzMarginLoss.adversarial
    with pytest.raises(ValueError, match="^lipschitz_constant"):
        LipschitzMarginLoss()(nn.Flatten(), x, y)


# (6) Bad inputs name the parameter.

@pytest.mark.parametrize("call,name", [
    (lambda: certified_radius(torch.zeros(2, 3), torch.tensor([0, 1]), 0.0), "lipschitz_constant"),
    (lambda: certified_radius(torch.zeros(2, 3), torch.tensor([0, 1]), float("nan")), "lipschitz_constant"),
    (lambda: certified_radius(torch.zeros(2, 3), torch.tensor([0, 3]), 1.0), "y"),
    (lambda: certified_radius(torch.zeros(2, 3), torch.tensor([0]), 1.0), "y"),
    (lambda: certified_radius(torch.zeros(3), torch.tensor([0, 1, 2]), 1.0), "logits"),
    (lambda: certified_accuracy(nn.Flatten(), torch.rand(2, 3, 2, 2), torch.tensor([0, 1]), 0.1), "lipschitz_constant"),
    (lambda: certified_accuracy(LipschitzCNN(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), -0.1), "eps"),
    (lambda: certified_accuracy(LipschitzCNN(), torch.rand(2, 3, 32, 32) + 1, torch.tensor([0, 1]), 0.1), "x"),
    (lambda: lipschitz_margin_loss(torch.zeros(2, 3), torch.tensor([0, 1]), temperature=0.0), "temperature"),
    (lambda: LipschitzMarginLoss(temperature=-1), "temperature"),
    (lambda: LipschitzMarginLoss(lipschitz_constant=float("inf")), "lipschitz_constant"),
    (lambda: lipschitz_estimate(nn.Flatten(), torch.rand(2, 3), iters=0), "iters"),
    (lambda: lipschitz_estimate(nn.Flatten(), torch.zeros(2, 3, dtype=torch.long)), "x"),
    (lambda: layer_spectral_norm(torch.zeros(4, 3, 3, 3), (3, 8, 8)), "layer"),
    (lambda: layer_spectral_norm(nn.Linear(3, 2), (0,)), "input_shape"),
    (lambda: LipschitzCNN(width=7), "width"),
    (lambda: LipschitzCNN(depth=-1), "depth"),
    (lambda: LipschitzCNN(kernel_size=2), "kernel_size"),
    (lambda: LipschitzCNN()(torch.rand(1, 3, 16, 16)), "x"),
    (lambda: AOLConv2d(4, 4, kernel_size=4), "kernel_size"),
])
def test_bad_inputs_raise_value_error_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
