"""Adversarial-training defenses: each loss and perturbation is what it claims to be,
on real CIFAR-10 images and the briefly trained seed CNN; each trains from its Hydra config."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import Perturbation, fgsm
from advlab.attacks._core import input_gradient, make_generator, perturbation_norm
from advlab.build import build_classifier
from advlab.callbacks import RobustGuard
from advlab.defenses import MixedLoss, TradesLoss
from helpers import config

EPS = 8 / 255


@pytest.fixture
def batch(test_images):
    x, y = test_images
    return x[:64], y[:64]


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _in_ball(x_adv, x, eps, norm):
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (perturbation_norm(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 0.5)])
def test_pgd_training_perturbation_raises_the_loss_inside_the_ball(norm, eps, trained_model, batch):
    x, y = batch
    x_adv = Perturbation("pgd", eps=eps, norm=norm, steps=10, random_start=True)(trained_model, x, y)
    _in_ball(x_adv, x, eps, norm)
    assert _ce(trained_model, x_adv, y).mean() > _ce(trained_model, x, y).mean() + 0.5
    # PGD-10 is at least as strong as one FGSM step, image for image on average
    assert _ce(trained_model, x_adv, y).mean() >= _ce(trained_model, fgsm(trained_model, x, y, eps, norm=norm), y).mean()


def test_fgsm_rs_starts_at_random_and_steps_1_25_eps(trained_model, batch):
    x, y = batch
    x_adv = Perturbation("fgsm-rs", eps=EPS)(trained_model, x, y)
    _in_ball(x_adv, x, EPS, "linf")
    again = Perturbation("fgsm-rs", eps=EPS)(trained_model, x, y)
    assert torch.equal(x_adv, again)
    plain = Perturbation("fgsm", eps=EPS)(trained_model, x, y)
    assert not torch.equal(x_adv, plain), "the random start moves the result"
    # away from the box, a coordinate's start is uniform and the 1.25 eps step reaches the boundary often
    inside = (x > EPS) & (x < 1 - EPS)
    at_boundary = ((x_adv - x).abs() > EPS * 0.999) & inside
    assert 0.5 < at_boundary.sum() / inside.sum() < 1.0
    # by hand: uniform start in the ball, a signed step of 1.25 eps, projected back
    start = (x + torch.empty_like(x).uniform_(-EPS, EPS, generator=make_generator(0, x.device))).clamp(0, 1)
    grad, _, _ = input_gradient(trained_model, start, y)
    expected = torch.min(torch.max(start + 1.25 * EPS * grad.sign(), x - EPS), x + EPS).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_n_fgsm_is_unprojected_noise_plus_a_step(trained_model, batch):
    x, y = batch
    p = Perturbation("n-fgsm", eps=EPS)
    x_adv = p(trained_model, x, y)
    delta = (x_adv - x).abs()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert delta.max() <= 3 * EPS + 1e-6
    assert (delta > EPS * 1.01).float().mean() > 0.3, "N-FGSM does not project back onto the eps-ball"
    assert (delta > 2 * EPS * 1.01).any(), "the step adds to the noise: the radius is noise + step"
    assert _ce(trained_model, x_adv, y).mean() > _ce(trained_model, x, y).mean()
    # by hand: noise of radius 2 eps, then a signed step of eps, clipped to [0, 1] only
    start = (x + torch.empty_like(x).uniform_(-2 * EPS, 2 * EPS, generator=make_generator(0, x.device))).clamp(0, 1)
    grad, _, _ = input_gradient(trained_model, start, y)
    assert torch.allclose(x_adv, (start + EPS * grad.sign()).clamp(0, 1), atol=1e-6)


def test_mixed_loss_over_several_perturbations(trained_model, batch):
    x, y = batch
    perturbations = [Perturbation("fgsm", eps=EPS), Perturbation("pgd", eps=EPS, steps=3, random_start=False)]
    loss, outputs = MixedLoss(0.2, perturbations, weights=[1, 3])(trained_model, x, y)
    assert list(outputs) == ["clean", "adv0_fgsm", "adv1_pgd"]
    terms = [F.cross_entropy(trained_model(p), y) for p in
             (x, fgsm(trained_model, x, y, EPS), perturbations[1](trained_model, x, y))]
    expected = 0.2 * terms[0] + 0.8 * (0.25 * terms[1] + 0.75 * terms[2])
    assert torch.allclose(loss, expected, atol=1e-5)
    assert list(MixedLoss(0.0, perturbations)(trained_model, x, y)[1]) == ["adv0_fgsm", "adv1_pgd"]


@pytest.mark.parametrize("weights, match", [([1], "one weight per perturbation"), ([0, 0], "positive sum"),
                                            ([1, -1], "finite numbers >= 0")])
def test_mixed_loss_weights_are_checked(weights, match):
    with pytest.raises(ValueError, match=match):
        MixedLoss(0.5, [Perturbation("fgsm", eps=EPS), Perturbation("fgsm", eps=EPS)], weights=weights)


def test_trades_loss_is_ce_plus_beta_kl_at_a_kl_maximiser(trained_model, batch):
    x, y = batch
    trades = TradesLoss(EPS, beta=6.0, steps=5)
    x_adv = trades.perturb(trained_model, x)  # seed 0
    _in_ball(x_adv, x, EPS, "linf")

    def kl(x_other):
        with torch.no_grad():
            return F.kl_div(trained_model(x_other).log_softmax(1), trained_model(x).log_softmax(1),
                            reduction="none", log_target=True).sum(1)

    noise = torch.empty_like(x).uniform_(-EPS, EPS, generator=torch.Generator().manual_seed(0))
    random_point = (x + noise).clamp(0, 1)
    assert kl(x_adv).mean() > 5 * kl(random_point).mean(), "the inner maximisation finds a high-KL point"
    loss, outputs = trades(trained_model, x, y)  # no generator: the same seed 0 as perturb's default
    clean, adv = trained_model(x), trained_model(x_adv)
    expected = F.cross_entropy(clean, y) + 6.0 * F.kl_div(adv.log_softmax(1), clean.log_softmax(1),
                                                          reduction="batchmean", log_target=True)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert set(outputs) == {"clean", "adv"}
    stream = torch.Generator().manual_seed(0)
    assert torch.allclose(trades(trained_model, x, y, generator=stream)[0], expected, atol=1e-5)
    assert not torch.equal(trades.perturb(trained_model, x, stream), x_adv), "a generator is a stream: it moves on"
    with pytest.raises(ValueError, match=r"loss\.beta"):
        TradesLoss(EPS, beta=-1)


DEFENSES = ["none", "fgsm", "fgsm_rs", "n_fgsm", "pgd", "trades", "mixed", "pgd_l2", "lipschitz", "vae"]
ATTACK_IN_THE_LOOP = {"fgsm", "fgsm_rs", "n_fgsm", "pgd", "trades", "mixed", "pgd_l2"}


@pytest.mark.parametrize("defense", DEFENSES)
def test_each_defense_config_trains(defense, cifar_root):
    """The defense's Hydra config builds its loss, and a few SGD steps on one real batch lower that loss."""
    from advlab.data import load_split, to_unit_float

    cfg = config("+experiment=defense_comparison", f"defense={defense}", "validation.attack.steps=2")
    torch.manual_seed(0)
    module = build_classifier(cfg)
    x, y = load_split(cifar_root, "train")
    x, y = to_unit_float(x[:128]), y[:128]
    opt = torch.optim.SGD(module.model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    module.model.train()
    for _ in range(8):
        # The same random draws every step, so the losses compare: the perturbation's starts from a fresh
        # generator, the model's own (the VAE's sampling) from the global stream.
        torch.manual_seed(1)
        loss, _ = module.loss(module.model, x, y, generator=torch.Generator().manual_seed(1))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert module.adversarial == (defense in ATTACK_IN_THE_LOOP)
    assert module.val_attack is not None and module.val_attack.norm == cfg.norm


def _fake_trainer(value):
    return SimpleNamespace(sanity_checking=False, callback_metrics={"val/adv_acc": torch.tensor(value)},
                           current_epoch=0, should_stop=False, logger=None, global_step=0)


def _run_guard(guard, values, module):
    trainer = None
    for epoch, value in enumerate(values):
        trainer = _fake_trainer(value)
        trainer.current_epoch = epoch
        with torch.no_grad():
            module.model.weight.fill_(epoch)  # the weights remember their epoch
        guard.on_validation_end(trainer, module)
        if trainer.should_stop:
            break
    guard.on_fit_end(trainer, module)
    return trainer


@pytest.mark.parametrize("action, weight", [("log", 3.0), ("stop", 2.0), ("rollback", 1.0)])
def test_guard_detects_catastrophic_overfitting(action, weight):
    module = SimpleNamespace(model=torch.nn.Linear(2, 2))
    guard = RobustGuard(co_drop=0.2, action=action)
    with pytest.warns(UserWarning, match="catastrophic overfitting at epoch 2"):
        trainer = _run_guard(guard, [0.30, 0.35, 0.02, 0.01], module)
    assert trainer.should_stop == (action != "log")
    assert guard.events[0]["kind"] == "catastrophic_overfitting" and guard.best_epoch == 1
    assert torch.all(module.model.weight == weight)  # rollback: epoch 1's weights are back
    assert guard.summary()["restored_best"] == (action == "rollback")


def test_guard_early_stopping_on_robust_accuracy_restores_the_best_epoch():
    module = SimpleNamespace(model=torch.nn.Linear(2, 2))
    guard = RobustGuard(patience=2, action="stop", restore_best=True)
    with pytest.warns(UserWarning, match="robust overfitting at epoch 3"):
        trainer = _run_guard(guard, [0.30, 0.40, 0.38, 0.36, 0.35], module)
    assert trainer.should_stop and trainer.current_epoch == 3
    assert torch.all(module.model.weight == 1.0)
    assert guard.summary()["best_epoch"] == 1


@pytest.mark.parametrize("kwargs, match", [({"co_drop": 0}, "guard.co_drop"), ({"action": "panic"}, "guard.action"),
                                           ({"patience": 0}, "guard.patience")])
def test_guard_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustGuard(**kwargs)
