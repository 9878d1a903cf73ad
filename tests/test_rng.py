"""advlab's one random-number policy: attacks, training losses and the evaluation draw only from
generators of their own (seeded by an int, or passed in), never from torch's global stream.

So a run's shuffling and dropout are the same whatever an attack draws, and evaluating a model
does not change the random numbers a user's script draws next.
"""

import pytest
import torch

import advlab
from advlab.attacks.perturbation import Perturbation
from advlab.attacks.registry import SPECS, build_attack
from advlab.defenses import MixedLoss, TradesLoss
from helpers import PixelNet, predict

# As in test_attack_contract: small budgets, and the settings under which each attack draws at all.
SMALL = {"steps": 3, "queries": 20, "n_target_classes": 2, "eot_samples": 2}
DRAWING = {"pgd": {"random_start": True, "restarts": 2}, "pgd-naive": {"random_start": True, "restarts": 2},
           "fab": {"restarts": 2}, "fab-t": {"restarts": 2}}
EPS = {"linf": 0.05, "l2": 0.5}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PixelNet().eval()


@pytest.fixture
def batch(model, synthetic_batch):
    x, _ = synthetic_batch
    return x, predict(model, x)


def _global_state():
    return torch.get_rng_state()


def _settings(spec, name):
    return {**{k: v for k, v in SMALL.items() if k in spec.settings}, **DRAWING.get(name, {})}


@pytest.mark.parametrize("name, norm", [(name, norm) for name, spec in SPECS.items() for norm in spec.norms])
def test_attacks_leave_the_global_random_state_alone(name, norm, model, batch):
    spec = SPECS[name]
    x, y = batch
    # FAB's restarts run where the first run found nothing within eps: a small eps leaves some images to them.
    eps = EPS[norm] / 10 if name in ("fab", "fab-t") else EPS[norm]
    attack = build_attack(name, norm=norm, seed=7, **_settings(spec, name))
    before = _global_state()
    attack(model, x, y, eps)
    if spec.targeted:
        attack(model, x, y, eps, target=(y + 1) % 10)
    if spec.randomised:
        generator = torch.Generator().manual_seed(7)
        attack(model, x, y, eps, generator=generator)
    assert torch.equal(_global_state(), before), f"{name} ({norm}) drew from the global random stream"


@pytest.mark.parametrize("perturbation", [("fgsm-rs", {}), ("n-fgsm", {}), ("pgd", {"steps": 2, "random_start": True})])
def test_training_losses_draw_only_from_the_generator_they_are_given(perturbation, model, batch):
    x, y = batch
    name, settings = perturbation
    losses = [MixedLoss(0.5, [Perturbation(name, eps=0.03, **settings)]), TradesLoss(0.03, steps=2)]
    for loss in losses:
        before = _global_state()
        generator = torch.Generator().manual_seed(0)
        loss(model, x, y, generator=generator)
        loss(model, x, y)  # no generator: the loss's own seeded one
        assert torch.equal(_global_state(), before), f"{loss!r} drew from the global random stream"
        assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state()), \
            f"{loss!r} did not draw from the generator it was given"


def test_evaluate_leaves_the_global_random_state_alone(model, batch):
    """The whole pipeline: every attack that draws, the worst case, targeted success and the six checks."""
    x, y = batch
    attacks = ["fgsm", {"name": "pgd", "steps": 3, "random_start": True}, {"name": "apgd-ce", "steps": 3},
               {"name": "square", "queries": 20}, {"name": "fab", "steps": 3, "restarts": 1}]
    before = _global_state()
    results = advlab.evaluate(model, x, y, eps=[0.0, 0.01, 0.03], attacks=attacks, checks=True, target=3,
                              checks_n_images=8, batch_size=4, progress=False)
    assert len(results.checks) == 6, "the checks ran"
    assert torch.equal(_global_state(), before), "advlab.evaluate drew from the global random stream"
