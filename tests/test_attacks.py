"""Single-step FGSM and PGD: their formulas, options and strength. What every attack guarantees
(the eps-ball, [0, 1], inputs untouched, modes restored, seeds) is tested once for all in
test_attack_contract.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import Perturbation, fgsm, pgd
from advlab.evaluation import predict


def test_fgsm_equals_one_line_formula(trained_model, test_images):
    x, y = test_images[0][:64], test_images[1][:64]
    eps = 0.03
    xr = x.clone().requires_grad_(True)
    F.nll_loss(trained_model(xr), y).backward()
    expected = (x + eps * xr.grad.sign()).clamp(0, 1)
    trained_model.zero_grad(set_to_none=True)
    assert torch.equal(fgsm(trained_model, x, y, eps), expected)


def test_targeted_fgsm_steps_against_the_gradient(trained_model, test_images):
    x, y = test_images[0][:64], test_images[1][:64]
    t = torch.full_like(y, 4)
    xr = x.clone().requires_grad_(True)
    F.nll_loss(trained_model(xr), t).backward()
    trained_model.zero_grad(set_to_none=True)
    assert torch.equal(fgsm(trained_model, x, y, 0.02, target=t), (x - 0.02 * xr.grad.sign()).clamp(0, 1))


def test_pgd_is_at_least_as_strong_as_fgsm(trained_model, test_images):
    x, y = test_images
    eps = 0.01
    clean = (predict(trained_model, x) == y).float().mean()
    acc_fgsm = (predict(trained_model, fgsm(trained_model, x, y, eps)) == y).float().mean()
    acc_pgd = (predict(trained_model, pgd(trained_model, x, y, eps, steps=30)) == y).float().mean()
    # chance is 0.1; the 2-epoch fixture lands between about 0.3 and 0.4 depending on the thread count
    assert clean > 0.2, f"fixture model did not learn (clean accuracy {clean:.2f})"
    assert acc_fgsm < clean
    assert acc_pgd <= acc_fgsm, (acc_pgd, acc_fgsm)


TARGETED = {
    "fgsm": lambda m, x, y, eps, **kw: fgsm(m, x, y, eps, **kw),
    "pgd": lambda m, x, y, eps, **kw: pgd(m, x, y, eps, steps=5, **kw),
}


@pytest.mark.parametrize("attack", TARGETED)
def test_targeted_attack_raises_target_probability(attack, trained_model, test_images):
    x, y = test_images
    target = 4  # deer, as in the study
    keep = y != target
    x, y = x[keep][:200], y[keep][:200]
    t = torch.full_like(y, target)
    with torch.no_grad():
        before = trained_model(x).softmax(1)[:, target]
    x_adv = TARGETED[attack](trained_model, x, y, 0.03, target=t)
    with torch.no_grad():
        after = trained_model(x_adv).softmax(1)[:, target]
    assert after.mean() > 1.5 * before.mean()
    assert (after > before).float().mean() > 0.9
    assert (predict(trained_model, x_adv) == target).float().mean() > (predict(trained_model, x) == target).float().mean()


def test_logits_and_log_probabilities_give_the_same_attack(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()

    class LogSoftmaxed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).log_softmax(1)

    a = pgd(tiny_model, x, y, 0.05, steps=3)
    b = pgd(LogSoftmaxed(tiny_model), x, y, 0.05, steps=3)
    assert torch.allclose(a, b, atol=1e-6)


def test_step_size_defaults_to_a_quarter_of_eps(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    assert torch.equal(pgd(tiny_model, x, y, 0.08, steps=2), pgd(tiny_model, x, y, 0.08, steps=2, step_size=0.02))
    # one step of eps/4 moves every pixel with a non-zero gradient by exactly eps/4 (before clipping)
    one = pgd(tiny_model, x, y, 0.08, steps=1)
    moved = (one - x).abs()
    inside = (x > 0.02) & (x < 0.98) & (moved > 0)
    assert torch.allclose(moved[inside], torch.tensor(0.02), atol=1e-6)


def test_eps_zero_returns_the_input(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    assert torch.equal(fgsm(tiny_model, x, y, 0.0), x)
    assert torch.equal(pgd(tiny_model, x, y, 0.0, steps=2), x)


def test_a_perturbation_calls_its_attack_at_its_radius(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()
    assert torch.equal(Perturbation("fgsm", eps=0.03)(tiny_model, x, y), fgsm(tiny_model, x, y, 0.03))
    random_pgd = Perturbation("pgd", eps=0.03, steps=2, random_start=True)
    expected = pgd(tiny_model, x, y, 0.03, steps=2, random_start=True, seed=0)
    assert torch.equal(random_pgd(tiny_model, x, y), expected), "no generator: the attack's own seed (0)"
    stream = torch.Generator().manual_seed(0)
    assert torch.equal(random_pgd(tiny_model, x, y, generator=stream), expected), "a generator is used as it is"
    assert not torch.equal(random_pgd(tiny_model, x, y, generator=stream), expected), "the stream moves on"
    assert Perturbation("pgd", eps=0.03).name == "pgd"
    assert Perturbation({"name": "pgd", "label": "pgd2"}, eps=0.1).name == "pgd2"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: fgsm(m, x, y, -0.1), r"eps must be a finite number >= 0"),
        (lambda m, x, y: fgsm(m, x, y, math.nan), r"eps must be a finite number >= 0"),
        (lambda m, x, y: pgd(m, x, y, math.inf), r"eps must be a finite number >= 0"),
        (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), r"steps must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, steps=2.5), r"steps must be an integer >= 1"),
        (lambda m, x, y: pgd(m, x, y, 0.1, step_size=-1), r"step_size must be a finite number >= 0"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, target=torch.full_like(y, 10)), r"target must be class indices in \[0, 9\]"),
        (lambda m, x, y: pgd(m, x, y, 0.1, target=torch.full_like(y, -1)), r"target must be class indices >= 0"),
        (lambda m, x, y: pgd(m, x, y, 0.1, target=torch.zeros(3, dtype=torch.long)), r"target must hold one class index per image"),
        (lambda m, x, y: fgsm(m, x * 2, y, 0.1), r"x must lie in \[0, 1\]"),
        (lambda m, x, y: fgsm(m, x - 0.5, y, 0.1), r"x must lie in \[0, 1\]"),
        (lambda m, x, y: fgsm(m, x, y[:5], 0.1), r"y must be a 1-D tensor of 8 class indices"),
        (lambda m, x, y: pgd(m, x, y + 10, 0.1), r"y must be class indices in \[0, 9\]"),
        (lambda m, x, y: Perturbation("fgsm", eps=-1.0), r"eps must be a finite number >= 0"),
        (lambda m, x, y: Perturbation("pgd", eps=0.1, steps=0)(m, x, y), r"steps must be an integer >= 1"),
        (lambda m, x, y: Perturbation("pgd", eps=0.1, stepz=3), r"pgd: unknown setting\(s\) \['stepz'\]"),
        (lambda m, x, y: Perturbation("cw", eps=0.1), r"unknown attack 'cw'"),
    ],
)
def test_bad_input_gets_a_clear_error(call, match, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    with pytest.raises(ValueError, match=match):
        call(tiny_model, x, y)


@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_l2_stays_in_the_l2_ball_and_the_box(loss, targeted, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    kwargs = {"target": torch.full_like(y, 3)} if targeted else {}
    x_adv = pgd(tiny_model, x, y, 0.5, steps=5, step_size=0.2, norm="l2", loss=loss, random_start=True, **kwargs)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= 0.5 * (1 + 1e-5)).all() and (norms > 0).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in tiny_model.parameters())


def test_pgd_l2_raises_the_loss(trained_model, test_images):
    x, y = test_images[0][:100], test_images[1][:100]
    x_adv = pgd(trained_model, x, y, 0.5, steps=10, step_size=0.1, norm="l2")
    with torch.no_grad():
        assert F.nll_loss(trained_model(x_adv), y) > F.nll_loss(trained_model(x), y) + 0.5


def test_restarts_keep_the_per_image_worst_case(trained_model, test_images):
    x, y = test_images[0][:200], test_images[1][:200]
    single = pgd(trained_model, x, y, 0.004, steps=5, random_start=True, seed=0)
    several = pgd(trained_model, x, y, 0.004, steps=5, random_start=True, restarts=4, seed=0)
    fooled_single = predict(trained_model, single) != y
    fooled_several = predict(trained_model, several) != y
    # The first restart is the single run (same seed): restarts can only add fooled images.
    assert (fooled_several | ~fooled_single).all()
    assert fooled_several.sum() >= fooled_single.sum()
    assert (several - x).abs().max() <= 0.004 + 1e-6


def test_margin_loss_pgd_is_comparable_to_cross_entropy(trained_model, test_images):
    x, y = test_images[0][:200], test_images[1][:200]
    acc = {loss: (predict(trained_model, pgd(trained_model, x, y, 0.01, steps=20, loss=loss)) == y).float().mean()
           for loss in ("ce", "margin", "dlr")}
    clean = (predict(trained_model, x) == y).float().mean()
    assert all(a < clean - 0.1 for a in acc.values()), (clean, acc)
    assert abs(acc["margin"] - acc["ce"]) <= 0.05 and abs(acc["dlr"] - acc["ce"]) <= 0.05, acc


@pytest.mark.parametrize("kwargs, match", [
    ({"norm": "l1"}, r"norm must be one of \('linf', 'l2'\)"),
    ({"loss": "hinge"}, r"loss must be one of"),
    ({"restarts": 0}, r"restarts must be an integer >= 1"),
])
def test_pgd_option_errors(kwargs, match, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    with pytest.raises(ValueError, match=match):
        pgd(tiny_model, x, y, 0.1, **kwargs)
