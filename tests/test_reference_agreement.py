"""advlab against the reference implementations in torchattacks, on models trained here."""

import pytest
import torch

from advlab.attacks import autoattack, fgsm, pgd
from advlab.evaluation import predict

torchattacks = pytest.importorskip("torchattacks")


# The ResNet's cases (its session fixture trains for 17 s, its PGD case takes 16 s) belong to the slow tier.
@pytest.fixture(params=["seed_cnn", pytest.param("small_resnet", marks=pytest.mark.slow)])
def model(request, trained_model, trained_resnet):
    return trained_model if request.param == "seed_cnn" else trained_resnet


def _acc(model, x, y):
    return (predict(model, x) == y).float().mean().item()


def test_fgsm_equals_torchattacks(model, test_images):
    x, y = test_images[0][:200], test_images[1][:200]
    ours = fgsm(model, x, y, 0.01)
    theirs = torchattacks.FGSM(model, eps=0.01)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_pgd_robust_accuracy_within_one_point_of_torchattacks(model, test_images):
    x, y = test_images[0][:300], test_images[1][:300]
    eps, steps = 2 / 255, 20
    ours = _acc(model, pgd(model, x, y, eps, steps=steps, step_size=eps / 4), y)
    theirs = _acc(model, torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=False)(x, y), y)
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


@pytest.mark.slow  # AutoAttack twice at full budget (40-115 s)
def test_autoattack_no_weaker_than_torchattacks(model, test_images, request):
    # eps where most images fall to APGD, so the costly last stages (FAB-T, Square with 5000
    # queries) run on few images and the test stays within CI's budget.
    x, y = test_images[0][:100], test_images[1][:100]
    eps = {"seed_cnn": 2 / 255, "small_resnet": 4 / 255}[request.node.callspec.params["model"]]
    ours = _acc(model, autoattack(model, x, y, eps, seed=0), y)
    theirs = _acc(model, torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10,
                                                 seed=0)(x, y), y)
    clean = _acc(model, x, y)
    assert ours < clean, "the ensemble fooled nothing"
    assert ours <= theirs + 0.005, (ours, theirs)
