"""The contract every registered attack keeps (advlab.attacks.registry.SPECS), tested once for all.

For each attack, each norm it supports, targeted where it can aim, the model in train and in
eval mode: images in [0, 1] and in the eps-ball (N-FGSM: in its noise + step radius); x, y and
target untouched; no gradient left on the parameters; the model's modes and batch-norm
statistics as they were; the same seed gives the same images. Randomised attacks give other
images under another seed where their randomness reaches the output. Bad arguments raise a
ValueError naming the parameter. A new attack in SPECS is covered without editing this file.

The attacks' own behaviour (formulas, schedules, strength, references) is tested in their files.
"""

import inspect
import math
import re

import pytest
import torch

from advlab.attacks import _core
from advlab.attacks.adaptive import adaptive_pgd, naive_pgd
from advlab.attacks.fgsm import fgsm_rs
from advlab.attacks.pgd import pgd
from advlab.attacks.registry import SPECS, build_attack
from helpers import PixelNet, assert_in_ball, perturbation_norms, predict

EPS = {"linf": 0.05, "l2": 0.5}
# Small budgets, so that the 80-odd cases run in seconds; each applies where the attack has the setting.
SMALL = {"steps": 3, "queries": 20, "n_target_classes": 2, "eot_samples": 2}
# Attacks that leave the eps-ball, and the radius (in eps) they stay within instead.
UNBOUNDED_RADIUS = {"n-fgsm": 3.0}  # noise 2 eps + one step of eps, unprojected


def small(spec, **extra) -> dict:
    return {**{k: v for k, v in SMALL.items() if k in spec.settings}, **extra}


def cases():
    for name, spec in SPECS.items():
        for norm in spec.norms:
            for targeted in ((False, True) if spec.targeted else (False,)):
                for train_mode in (False, True):
                    label = f"{name}-{norm}{'-targeted' if targeted else ''}-{'train' if train_mode else 'eval'}"
                    yield pytest.param(name, norm, targeted, train_mode, id=label)


@pytest.fixture
def model():
    """PixelNet (batch-norm, boundaries close to the images: every attack fools something in 3 steps)."""
    torch.manual_seed(0)
    return PixelNet().eval()


@pytest.fixture
def batch(model, synthetic_batch):
    """The synthetic images labelled with the model's predictions, so every image is attacked; two pixels
    on the faces of the box, where the ball must be clipped to [0, 1]."""
    x, _ = synthetic_batch
    x = x.clone()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0
    return x, predict(model, x)


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_every_unbounded_attack_has_its_radius_here():
    assert {name for name, spec in SPECS.items() if not spec.bounded} == set(UNBOUNDED_RADIUS)


@pytest.mark.parametrize("name, norm, targeted, train_mode", list(cases()))
def test_attack_contract(name, norm, targeted, train_mode, model, batch):
    spec = SPECS[name]
    x, y = batch
    eps = EPS[norm]
    target = (y + 1) % 10 if targeted else None
    x_before, y_before = x.clone(), y.clone()
    target_before = target.clone() if targeted else None
    model.train(train_mode)
    bn_before = _bn_state(model)
    attack = build_attack(name, norm=norm, seed=3, **small(spec))

    x_adv = attack(model, x, y, eps, target=target)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.data_ptr() != x.data_ptr(), "the input itself was returned"
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "outside [0, 1]"
    if spec.bounded:
        assert_in_ball(x_adv, x, eps, norm)
    else:
        assert_in_ball(x_adv, x, UNBOUNDED_RADIUS[name] * eps, norm)
    assert (x_adv != x).any(), "the attack did nothing"
    assert torch.equal(x, x_before) and torch.equal(y, y_before), "the input was modified in place"
    assert not targeted or torch.equal(target, target_before), "the target was modified in place"
    assert x.grad is None
    assert all(p.grad is None for p in model.parameters()), "gradient left on model parameters"
    assert all(m.training == train_mode for m in model.modules()), "train/eval mode not restored"
    bn_after = _bn_state(model)
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before), "the attack updated batch-norm statistics"

    again = build_attack(name, norm=norm, seed=3, **small(spec))(model, x, y, eps, target=target)
    assert torch.equal(x_adv, again), "the same seed gave other images"


MINIMUM_NORM = [name for name, spec in SPECS.items() if spec.minimal_norms is not None
                or inspect.signature(spec.fn).parameters["eps"].default is None]


@pytest.mark.parametrize("name", MINIMUM_NORM)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_minimum_norm_mode_keeps_the_contract(name, norm, train_mode, model, batch):
    """Without eps (the smallest adversarial found, FAB's own mode) and through minimal_norms (one run
    for every eps): the same guarantees, except the ball."""
    spec = SPECS[name]
    x, y = batch
    x_before = x.clone()
    model.train(train_mode)
    bn_before = _bn_state(model)
    outputs = []
    if inspect.signature(spec.fn).parameters["eps"].default is None:
        x_adv = spec.fn(model, x, y, norm=norm, **spec.fixed, **small(spec))
        assert x_adv.shape == x.shape and not x_adv.requires_grad
        assert x_adv.min() >= 0 and x_adv.max() <= 1, "outside [0, 1]"
        assert (x_adv != x).any(), "the attack did nothing"
        outputs.append(x_adv)
    attack = build_attack(name, norm=norm, **small(spec))
    if hasattr(attack, "minimal_norms"):
        norms = attack.minimal_norms(model, x, y)
        assert norms.shape == (len(x),) and (norms >= 0).all() and (norms > 0).any() and not norms.requires_grad
        if outputs:  # both modes find the same points
            assert torch.allclose(perturbation_norms(outputs[0] - x, norm), norms)
    assert torch.equal(x, x_before), "the input was modified in place"
    assert all(p.grad is None for p in model.parameters()), "gradient left on model parameters"
    assert all(m.training == train_mode for m in model.modules()), "train/eval mode not restored"
    bn_after = _bn_state(model)
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before), "the attack updated batch-norm statistics"


# Settings under which each randomised attack's randomness reaches its output. Attacks not listed use
# their randomness with the small settings alone (random starts, noise, random search).
RANDOM_SETTINGS = {"pgd": {"random_start": True}, "pgd-naive": {"random_start": True},
                   "fab": {"restarts": 2}, "fab-t": {"restarts": 2}}
# FAB's only randomness is its restarts' starting points; a restart's point is kept only where it beats
# the first, restart-free run, which need not happen on a given batch (on this model it never does).
ONLY_WHEN_A_RESTART_WINS = {"fab", "fab-t"}


@pytest.mark.parametrize("name, norm", [(name, norm) for name, spec in SPECS.items() if spec.randomised
                                         for norm in spec.norms])
def test_another_seed_gives_other_images(name, norm, model, batch):
    spec = SPECS[name]
    x, y = batch
    settings = small(spec, **RANDOM_SETTINGS.get(name, {}))
    a = build_attack(name, norm=norm, seed=0, **settings)(model, x, y, EPS[norm])
    b = build_attack(name, norm=norm, seed=1, **settings)(model, x, y, EPS[norm])
    assert torch.equal(a, build_attack(name, norm=norm, seed=0, **settings)(model, x, y, EPS[norm])), \
        "the same seed gave other images"
    if name in ONLY_WHEN_A_RESTART_WINS:
        first_run = build_attack(name, norm=norm, **small(spec))(model, x, y, EPS[norm])
        assert not torch.equal(a, b) or (torch.equal(a, first_run) and torch.equal(b, first_run))
    else:
        assert not torch.equal(a, b), "the seed does not reach the attack's random draws"


@pytest.mark.parametrize("name", [name for name, spec in SPECS.items() if spec.randomised])
def test_a_generator_is_used_as_given(name, model, batch):
    """Training passes its own stream: equal generators give equal images, and the stream advances."""
    spec = SPECS[name]
    x, y = batch
    norm = "l2" if "l2" in spec.norms else "linf"
    attack = build_attack(name, norm=norm, **small(spec, **RANDOM_SETTINGS.get(name, {})))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = attack(model, x, y, EPS[norm], generator=g1)
    assert torch.equal(a, attack(model, x, y, EPS[norm], generator=g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    if name not in ONLY_WHEN_A_RESTART_WINS:
        assert not torch.equal(g1.get_state(), torch.Generator().manual_seed(5).get_state()), "nothing was drawn"
        assert not torch.equal(a, attack(model, x, y, EPS[norm], generator=g1)), "the stream did not advance"


# ---------------------------------------------------------------- bad arguments name the parameter


def _names(message: str, parameter: str) -> bool:
    return re.match(rf"{re.escape(parameter)}\b", message) is not None


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("bad, parameter", [({"eps": -1.0}, "eps"), ({"eps": math.nan}, "eps"),
                                            ({"x": 2.0}, "x"), ({"x": -1.0}, "x")])
def test_bad_call_arguments_raise_value_error_naming_them(name, bad, parameter, model, batch):
    spec = SPECS[name]
    x, y = batch
    norm = spec.norms[0]
    eps = bad.get("eps", EPS[norm])
    if "x" in bad:
        x = x * bad["x"]  # values in [0, 2] or [-1, 0]
    with pytest.raises(ValueError) as error:
        build_attack(name, norm=norm, **small(spec))(model, x, y, eps)
    assert _names(str(error.value), parameter), str(error.value)


@pytest.mark.parametrize("name", [name for name, spec in SPECS.items() if spec.randomised])
@pytest.mark.parametrize("seed", [None, -1, 1.5])
def test_a_seed_that_is_not_an_integer_from_0_is_refused_naming_seed(name, seed, model, batch):
    """One random-number policy: an int >= 0 or a torch.Generator; None (the old "use the global RNG") is gone."""
    spec = SPECS[name]
    x, y = batch
    norm = spec.norms[0]
    with pytest.raises(ValueError) as error:
        build_attack(name, norm=norm, seed=seed, **small(spec, **RANDOM_SETTINGS.get(name, {})))(
            model, x, y, EPS[norm])
    assert _names(str(error.value), "seed"), str(error.value)


@pytest.mark.parametrize("name", list(SPECS))
def test_an_unknown_norm_is_refused_naming_norm(name, model, batch):
    spec = SPECS[name]
    x, y = batch
    with pytest.raises(ValueError) as error:
        build_attack(name, norm="l3")
    assert _names(str(error.value), "norm"), str(error.value)
    # the function itself checks too, for callers that do not go through the registry
    with pytest.raises(ValueError) as error:
        spec.fn(model, x, y, eps=EPS["linf"], norm="l3", **spec.fixed, **small(spec))
    assert _names(str(error.value), "norm"), str(error.value)


def test_n_fgsm_refuses_l2_naming_norm(model, batch):
    x, y = batch
    for call in (lambda: build_attack("n-fgsm", norm="l2"),
                 lambda: SPECS["n-fgsm"].fn(model, x, y, eps=0.5, norm="l2")):
        with pytest.raises(ValueError) as error:
            call()
        assert _names(str(error.value), "norm") and "l2" in str(error.value), str(error.value)


def test_fgsm_rs_in_l2_takes_a_normalised_gradient_step(model, batch):
    """One L2 step from an L2 random start: the images are in the L2 ball and moved, the step is the
    normalised gradient (not its sign, which in L2 would leave every pixel moved by the same amount)."""
    x, y = batch
    eps = EPS["l2"]
    x_adv = build_attack("fgsm-rs", norm="l2", seed=4)(model, x, y, eps)
    assert_in_ball(x_adv, x, eps, "l2")
    delta = (x_adv - x).flatten(1)
    assert (delta.norm(dim=1) > 0).all()
    assert (delta.abs().amax(1) < eps).all(), "a pixel moved by the whole radius"
    assert all(len(d.abs().unique()) > 2 for d in delta), "every pixel moved by the same amount: a sign step"
    # by hand: x0 = uniform in the L2 ball, x' = P(x0 + 1.25 eps grad / ||grad||_2)
    x0 = _core.random_start(x, eps, "l2", _core.make_generator(4, x.device))
    grad, _, _ = _core.input_gradient(model, x0, y)
    step = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(x_adv, _core.project(x0 + 1.25 * eps * step, x, eps, "l2"), atol=1e-6)
    assert torch.equal(x_adv, fgsm_rs(model, x, y, eps, norm="l2", seed=4))


# ---------------------------------------------------------------- the purifier attacks on a plain model


def test_purifier_attacks_work_on_a_plain_model(model, batch):
    """Without a purifier, naive PGD is PGD, and adaptive PGD is PGD on the mean log-probabilities
    (with one sample: the model's own, which give cross-entropy the same gradient up to rounding)."""
    x, y = batch
    eps = EPS["linf"]
    model.train()
    naive = naive_pgd(model, x, y, eps, steps=3, random_start=True, seed=2)
    assert torch.equal(naive, pgd(model, x, y, eps, steps=3, random_start=True, seed=2))
    assert torch.equal(build_attack("pgd-naive", steps=3, random_start=True, seed=2)(model, x, y, eps), naive)
    adaptive = adaptive_pgd(model, x, y, eps, steps=3, eot_samples=1, seed=2)
    assert torch.allclose(adaptive, pgd(model, x, y, eps, steps=3, random_start=True, seed=2), atol=1e-6)
    assert torch.equal(build_attack("pgd-adaptive", steps=3, eot_samples=1, seed=2)(model, x, y, eps), adaptive)
    assert (predict(model.eval(), adaptive) != y).any(), "the adaptive attack fooled nothing"
    assert perturbation_norms(adaptive - x, "linf").max() <= eps + 1e-6
