"""The speed work on standard AutoAttack keeps what it finds.

autoattack shares one clean forward pass between its stages, confirms only the successes a stage
reports, lets FAB-T drop an image as soon as it has an adversarial within eps, feeds the model
channels-last images on the CPU, and solves FAB's box-constrained projections by Newton's
method instead of sorting. These tests pin that down: the same images fooled, by the same
stages, as the public attacks run one after another; the projections equal the sorted solution;
no bookkeeping forward passes; models that reject channels-last input still work.
"""

import math

import pytest
import torch
from torch import nn

from advlab.attacks import apgd, apgd_targeted, autoattack, fab_targeted, square
from advlab.attacks._core import AttackedModel, prepare_model
from advlab.attacks.fab import _smallest_level, _smallest_level_sorted, project_onto_hyperplane_linf
from helpers import PixelNet, assert_in_ball, predict

STEPS, QUERIES = 10, 100


def _stages_one_by_one(model, x, y, eps, norm, seed):
    """AutoAttack as it was written before the speed work: each public attack on the images
    still robust, every returned point re-checked by a forward pass of the whole stage batch."""
    stages = [
        ("apgd-ce", lambda xs, ys: apgd(model, xs, ys, eps, norm=norm, steps=STEPS, loss="ce", seed=seed)),
        ("apgd-t", lambda xs, ys: apgd_targeted(model, xs, ys, eps, norm=norm, steps=STEPS, seed=seed)),
        ("fab-t", lambda xs, ys: fab_targeted(model, xs, ys, norm=norm, steps=STEPS, eps=eps, seed=seed)),
        ("square", lambda xs, ys: square(model, xs, ys, eps, norm=norm, queries=QUERIES, seed=seed)),
    ]
    robust = predict(model, x) == y
    broken_by = ["" if r else "clean" for r in robust.tolist()]
    for name, attack in stages:
        idx = robust.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        fooled = predict(model, attack(x[idx], y[idx])) != y[idx]
        robust[idx[fooled]] = False
        for i in idx[fooled].tolist():
            broken_by[i] = name
    return broken_by


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.3)])
def test_standard_autoattack_fools_the_same_images_with_the_same_stages(norm, eps):
    torch.manual_seed(0)
    model = PixelNet().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(24, 3, 16, 16, generator=g)
    y = predict(model, x)
    y[:4] = (y[:4] + 1) % 10  # a few misclassified at x
    x_adv, broken_by = autoattack(model, x, y, eps, norm=norm, seed=0, steps=STEPS, queries=QUERIES,
                                  return_stages=True)
    assert broken_by == _stages_one_by_one(model, x, y, eps, norm, seed=0)
    assert_in_ball(x_adv, x, eps, norm)
    fooled = torch.tensor([b not in ("", "clean") for b in broken_by])
    assert (predict(model, x_adv)[fooled] != y[fooled]).all()
    assert torch.equal(x_adv[~fooled], x[~fooled])


def _random_levels(rows: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(rows, d, generator=g, dtype=torch.float64)
    weight[torch.rand(rows, d, generator=g) < 0.2] = 0  # coordinates that cannot help
    cap = torch.rand(rows, d, generator=g, dtype=torch.float64)
    cap[torch.rand(rows, d, generator=g) < 0.2] = 0  # saturated pixels
    cap[:, : d // 4] = (cap[:, : d // 4] * 4).round() / 4  # ties
    most = (weight * cap).sum(1)
    need = most * torch.rand(rows, generator=g, dtype=torch.float64) * 1.2  # some rows unreachable
    need[:3] = 0
    return weight, cap, need


@pytest.mark.parametrize("d", [1, 7, 300])
def test_newton_level_search_equals_the_sorted_one(d):
    weight, cap, need = _random_levels(200, d, seed=d)
    newton, by_sorting = _smallest_level(weight, cap, need), _smallest_level_sorted(weight, cap, need)
    assert torch.allclose(newton, by_sorting, rtol=1e-12, atol=1e-15)


def test_linf_projection_lands_on_the_hyperplane_inside_the_box():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 100, generator=g)
    w = torch.randn(64, 100, generator=g)
    b = torch.randn(64, generator=g)
    z = project_onto_hyperplane_linf(x, w, b)
    reachable = (w.clamp_min(0).sum(1) + b >= 0) & (w.clamp_max(0).sum(1) + b <= 0)
    assert z.min() >= 0 and z.max() <= 1
    assert ((z * w).sum(1) + b)[reachable].abs().max() < 1e-4


class CountingModel(nn.Module):
    """Counts forward passes and the images in them."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.images = model, 0, 0

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        return self.model(x)


def test_apgd_targeted_makes_no_bookkeeping_forward_passes():
    torch.manual_seed(0)
    model = CountingModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = predict(model, x)
    model.calls = 0
    apgd_targeted(model, x, y, 1e-4, steps=5, n_target_classes=3)  # too small an eps to fool anything
    assert model.calls == 1 + 3 * (1 + 5)  # the clean pass, then per target the start and 5 steps


def test_fab_t_makes_two_forward_passes_per_step():
    torch.manual_seed(0)
    model = CountingModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = predict(model, x)
    model.calls = 0
    fab_targeted(model, x, y, steps=5, eps=1e-6, n_target_classes=2)
    # the clean pass; per target 5 steps of (linearisation, check) and a re-check of the kept
    # points; a final re-check on the whole batch (before: 3 passes per step and 3 more per call)
    assert model.calls == 1 + 2 * (5 * 2 + 1) + 1


class FlattensWithView(nn.Module):
    """Rejects channels-last input: `view` needs a contiguous tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.contiguous_inputs = []

    def forward(self, x):
        self.contiguous_inputs.append(x.is_contiguous())
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_models_that_reject_channels_last_input_are_fed_contiguous_images():
    torch.manual_seed(0)
    model = FlattensWithView().eval()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fast, clean = prepare_model(model, x)
    assert not fast.channels_last and torch.equal(clean, model(x).detach())
    y = predict(model, x)
    model.contiguous_inputs.clear()
    x_adv = autoattack(model, x, y, 0.05, steps=3, queries=20)
    assert_in_ball(x_adv, x, 0.05, "linf")
    # one channels-last try (it raised), then contiguous images only
    assert model.contiguous_inputs[0] is False and all(model.contiguous_inputs[1:])


def test_channels_last_gives_the_same_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 10))
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grads = []
    for fast in (AttackedModel(model), AttackedModel(model, channels_last=True)):
        (g,) = torch.autograd.grad(fast(x).sum(), x)
        grads.append(g)
    assert torch.allclose(*grads, atol=1e-6)


def test_bf16_autoattack_stays_in_the_ball_and_returns_x_where_it_failed():
    torch.manual_seed(0)
    model = PixelNet().eval()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = predict(model, x)
    before = x.clone()
    x_adv, broken_by = autoattack(model, x, y, 0.02, steps=5, queries=50, bf16=True, return_stages=True)
    assert_in_ball(x_adv, x, 0.02, "linf")
    assert torch.equal(x, before) and all(p.grad is None for p in model.parameters())
    failed = torch.tensor([b == "" for b in broken_by])
    assert torch.equal(x_adv[failed], x[failed])
    assert not math.isnan(x_adv.sum().item())
