"""FAB and FAB-T: the box-constrained projections against solvers, minimal norms against a linear model's
exact distances, eps mode against thresholded norms, restarts, and the curve against PGD. The invariants
every attack keeps are in test_attack_contract.py."""

import math

import pytest
import torch
from torch import nn

from advlab.attacks.fab import (
    accuracy_curve,
    fab,
    fab_targeted,
    minimal_norms,
    project_onto_hyperplane_l2,
    project_onto_hyperplane_linf,
)
from advlab.attacks.pgd import pgd
from helpers import PixelNet

STEPS = 10  # FAB converges within a few steps on these small models; keeps the file fast
EPS = {"linf": 0.03, "l2": 0.3}


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def norms_of(delta, norm):
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.fixture
def net():
    """PixelNet: unlike the pooled `tiny_model` (which predicts one class almost whatever the input), its
    decision boundaries lie close to the images, so short attacks find adversarials for every image."""
    torch.manual_seed(0)
    return PixelNet().eval()


@pytest.fixture
def batch(net, synthetic_batch):
    """The synthetic images with half of the labels set to net's prediction (so half are
    correctly classified and attacked, half already misclassified)."""
    x, y = synthetic_batch
    y = y.clone()
    y[::2] = predict(net, x)[::2]
    y[1::2] = (predict(net, x)[1::2] + 1) % 10
    return x, y


def linear_model(seed: int = 0, num_classes: int = 2):
    """nn.Linear on flattened 3x8x8 images: its decision boundary is an exact hyperplane."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))


# ---------------------------------------------------------------- what FAB returns


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_returned_points_are_misclassified_wherever_they_moved(norm, net, batch):
    x, y = batch
    for x_adv in (fab(net, x, y, norm=norm, steps=STEPS),
                  fab_targeted(net, x, y, norm=norm, steps=3, n_target_classes=3)):
        moved = (x_adv != x).flatten(1).any(1)
        assert moved.any()
        assert (predict(net, x_adv)[moved] != y[moved]).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_points_reach_the_target(norm, net, batch):
    x, y = batch
    target = torch.full_like(y, 3)
    target[0] = predict(net, x[:1])  # image 0 is already classified as its target
    x_adv = fab(net, x, y, norm=norm, steps=STEPS, target=target)
    moved = (x_adv != x).flatten(1).any(1)
    assert not moved[0], "an image already classified as the target must stay"
    assert moved.sum() >= 4
    assert (predict(net, x_adv)[moved] == target[moved]).all()


def test_already_misclassified_images_are_returned_unchanged_with_norm_zero(net, batch):
    x, y = batch
    wrong = predict(net, x) != y
    assert wrong.any() and (~wrong).any(), "the fixture batch should mix both cases"
    x_adv = fab(net, x, y, steps=STEPS)
    assert torch.equal(x_adv[wrong], x[wrong])
    norms = minimal_norms(net, x, y, steps=STEPS)
    assert (norms[wrong] == 0).all() and (norms[~wrong] > 0).all()


# ---------------------------------------------------------------- the projections


@pytest.mark.parametrize("project, dual", [(project_onto_hyperplane_l2, 2.0), (project_onto_hyperplane_linf, 1.0)])
def test_projection_without_active_box_is_the_closed_form(project, dual):
    g = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(5, 30, generator=g)
    w = torch.randn(5, 30, generator=g)
    b = -(w * x).sum(1) + 0.05 * torch.randn(5, generator=g)  # hyperplanes close to x: the box stays inactive
    z = project(x, w, b)
    v = ((w * x).sum(1) + b)[:, None]
    # closest point: L2 moves along w, L-inf moves every coordinate by the same amount along sign(w)
    direction = w / w.norm(dim=1, keepdim=True) ** 2 if dual == 2.0 else w.sign() / w.abs().sum(1, keepdim=True)
    assert torch.allclose(z, x - v * direction, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_constrained_projection_is_optimal(norm):
    """Against a general solver: linprog for L-inf, SLSQP for L2 (D small so both are exact)."""
    np = pytest.importorskip("numpy")
    optimize = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(1)
    d = 12
    x = torch.rand(6, d, generator=g, dtype=torch.float64)
    w = torch.randn(6, d, generator=g, dtype=torch.float64)
    b = -(w * x).sum(1) + 2 * torch.randn(6, generator=g, dtype=torch.float64)  # far enough that the box binds
    project = project_onto_hyperplane_linf if norm == "linf" else project_onto_hyperplane_l2
    z = project(x, w, b)
    assert torch.allclose((z * w).sum(1) + b, torch.zeros(6, dtype=torch.float64), atol=1e-9)
    assert z.min() >= 0 and z.max() <= 1
    assert ((z == 0) | (z == 1)).any(1).sum() >= 3, "the box should bind in most rows"
    for i in range(6):
        xi, wi, bi = x[i].numpy(), w[i].numpy(), b[i].item()
        bounds = [(-xi[j], 1 - xi[j]) for j in range(d)]
        if norm == "linf":  # variables (delta, t): min t s.t. |delta_j| <= t, w.(x + delta) + b = 0
            a_ub = np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]]
            res = optimize.linprog(np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d),
                                   A_eq=np.r_[wi, 0.0][None], b_eq=[-bi - wi @ xi], bounds=bounds + [(0, None)])
            best = res.fun
        else:
            res = optimize.minimize(lambda v: 0.5 * v @ v, np.zeros(d), jac=lambda v: v, method="SLSQP", bounds=bounds,
                                    constraints=[{"type": "eq", "fun": lambda v: wi @ (xi + v) + bi, "jac": lambda v: wi}],
                                    options={"ftol": 1e-12, "maxiter": 200})
            best = math.sqrt(2 * res.fun)
        assert res.success
        assert norms_of(z[i : i + 1] - x[i : i + 1], norm).item() == pytest.approx(best, rel=1e-5, abs=1e-9)


def test_unreachable_hyperplane_gives_the_furthest_box_point():
    x = torch.full((1, 4), 0.5)
    w = torch.ones(1, 4)
    b = torch.tensor([-10.0])  # w.z = 10 needs z = 2.5 per pixel: outside the box
    assert torch.equal(project_onto_hyperplane_linf(x, w, b), torch.ones(1, 4))
    assert torch.equal(project_onto_hyperplane_l2(x, w, b), torch.ones(1, 4))


# ---------------------------------------------------------------- minimal norms


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_minimal_norm_on_a_linear_model_is_the_distance_to_its_hyperplane(norm):
    model = linear_model()
    x = 0.4 + 0.2 * torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = predict(model, x)  # correctly classified, so every image has a boundary to cross
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    b = (model[1].bias[1] - model[1].bias[0]).detach()
    dual = w.norm() if norm == "l2" else w.abs().sum()
    distance = (x.flatten(1) @ w + b).abs() / dual
    # the closest point must not touch the box: then the analytic distance is the minimum
    assert distance.max() < (0.4 if norm == "linf" else 0.4 * w.norm() / w.abs().max())

    norms = minimal_norms(model, x, y, norm=norm, steps=30)

    assert (norms >= distance * (1 - 1e-4)).all(), "no adversarial can be closer than the hyperplane"
    assert torch.allclose(norms, distance, rtol=0.01)


def test_fab_t_with_one_other_class_matches_untargeted_fab_on_two_classes():
    model = linear_model(1)
    x = 0.4 + 0.2 * torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = predict(model, x)
    a = fab(model, x, y, norm="l2", steps=STEPS)
    b = fab_targeted(model, x, y, norm="l2", steps=STEPS, n_target_classes=1)
    assert torch.allclose(norms_of(a - x, "l2"), norms_of(b - x, "l2"), rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_mode_agrees_with_thresholding_the_minimal_norms(norm, net, batch):
    x, y = batch
    norms = minimal_norms(net, x, y, norm=norm, steps=STEPS)
    found = norms[norms.isfinite() & (norms > 0)]
    assert found.numel() >= 2
    for eps in (0.0, found.min().item() * 1.001, found.median().item(), found.max().item() * 1.001):
        x_adv = fab(net, x, y, norm=norm, steps=STEPS, eps=eps)
        moved = (x_adv != x).flatten(1).any(1)
        assert torch.equal(moved, (norms <= eps) & (norms > 0)), eps
        assert torch.allclose(norms_of(x_adv - x, norm)[moved], norms[moved])


def test_restarts_never_increase_the_norms_and_are_deterministic_under_a_seed(net, batch):
    x, y = batch
    single = minimal_norms(net, x, y, norm="l2", steps=5)
    a = minimal_norms(net, x, y, norm="l2", steps=5, restarts=2, seed=7)
    b = minimal_norms(net, x, y, norm="l2", steps=5, restarts=2, seed=7)
    c = minimal_norms(net, x, y, norm="l2", steps=5, restarts=2, seed=8)
    assert torch.equal(a, b)
    assert (a <= single).all()  # the first run is the restart-free one; later ones only improve
    assert not torch.equal(a, c) or torch.equal(a, single)


def test_accuracy_curve_counts_norms_above_each_eps():
    norms = torch.tensor([0.0, 0.01, 0.02, 0.5, math.inf])
    curve = accuracy_curve(norms, [0.0, 0.01, 0.015, 0.5, 10.0])
    assert curve == pytest.approx([0.8, 0.6, 0.6, 0.2, 0.2])


def test_fab_curve_tracks_pgd_on_the_trained_model(trained_model, test_images):
    x, y = test_images[0][:100], test_images[1][:100]
    eps_list = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.03]
    norms = minimal_norms(trained_model, x, y, norm="linf", steps=20)
    curve = accuracy_curve(norms, eps_list)
    clean = (predict(trained_model, x) == y).float().mean().item()
    acc_pgd = (predict(trained_model, pgd(trained_model, x, y, 0.01, steps=30)) == y).float().mean().item()
    fab_at_01 = curve[eps_list.index(0.01)]

    assert curve[0] == pytest.approx(clean), "at eps 0 only the misclassified images are not robust"
    assert all(a >= b for a, b in zip(curve, curve[1:])), "robust accuracy must not grow with eps"
    # measured: FAB 0.20, PGD 0.23 (clean 0.45). Both are upper bounds on the true robust
    # accuracy; FAB must not be much weaker than PGD and should not be wildly apart.
    assert fab_at_01 <= acc_pgd + 0.05, (fab_at_01, acc_pgd)
    assert abs(fab_at_01 - acc_pgd) <= 0.10, (fab_at_01, acc_pgd)
    assert norms.isfinite().all(), "unbounded FAB should find an adversarial for every image of this weak model"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: fab(m, x, y, steps=0), r"steps must be an integer >= 1"),
        (lambda m, x, y: fab(m, x, y, norm="l1"), r"norm must be one of \('linf', 'l2'\)"),
        (lambda m, x, y: fab(m, x, y, eps=-0.1), r"eps must be a finite number >= 0"),
        (lambda m, x, y: fab(m, x, y, restarts=-1), r"restarts must be an integer >= 0"),
        (lambda m, x, y: fab(m, x, y, alpha_max=1.5), r"alpha_max must be a number in \[0, 1\]"),
        (lambda m, x, y: fab(m, x, y, alpha_max=-0.1), r"alpha_max must be a number in \[0, 1\]"),
        (lambda m, x, y: fab(m, x, y, eta=0.9), r"eta must be a finite number >= 1"),
        (lambda m, x, y: fab(m, x, y, beta=0.0), r"beta must be a number in \(0, 1\]"),
        (lambda m, x, y: fab(m, x, y, beta=1.1), r"beta must be a number in \(0, 1\]"),
        (lambda m, x, y: fab(m, x, y, seed=-1), r"seed must be an integer >= 0"),
        (lambda m, x, y: fab(m, x * 2, y), r"x must lie in \[0, 1\]"),
        (lambda m, x, y: fab(m, x, y + 10), r"y must be class indices in \[0, 9\]"),
        (lambda m, x, y: fab(m, x, y, target=10), r"target must be class indices in \[0, 9\]"),
        (lambda m, x, y: fab_targeted(m, x, y, n_target_classes=0), r"n_target_classes must be an integer in \[1, 9\]"),
        (lambda m, x, y: fab_targeted(m, x, y, n_target_classes=10), r"n_target_classes must be an integer in \[1, 9\]"),
        (lambda m, x, y: fab_targeted(m, x, y, eps=math.nan), r"eps must be a finite number >= 0"),
        (lambda m, x, y: minimal_norms(m, x, y, norm="l0"), r"norm must be one of"),
        (lambda m, x, y: minimal_norms(m, x - 0.5, y), r"x must lie in \[0, 1\]"),
        (lambda m, x, y: accuracy_curve(torch.tensor([0.1, 0.2]), [-0.01]), r"eps_list entries must be a finite number >= 0"),
        (lambda m, x, y: accuracy_curve(torch.tensor([]), [0.1]), r"norms must be a non-empty 1-D tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(call, match, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    with pytest.raises(ValueError, match=match):
        call(tiny_model, x, y)
