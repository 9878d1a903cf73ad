import pytest
import torch
from torch import nn

from advlab.attacks import Perturbation, apgd, autoattack
from advlab.evaluation import predict


@pytest.mark.parametrize("version", ["standard", "rand"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_autoattack_invariants(version, norm, eps, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()
    y = predict(tiny_model, x)  # every image correct to begin with, so every one is attacked
    before = x.clone()
    x_adv, broken_by = autoattack(tiny_model, x, y, eps, norm=norm, version=version, return_stages=True,
                                  steps=10, queries=100)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-7).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x, before) and all(p.grad is None for p in tiny_model.parameters())
    fooled = predict(tiny_model, x_adv) != y
    # every image is either fooled, with the stage that did it named, or returned as it was
    assert all((f and b not in ("", "clean")) or (not f and b == "") for f, b in zip(fooled.tolist(), broken_by))
    assert torch.equal(x_adv[~fooled], x[~fooled])


@pytest.mark.slow  # AutoAttack twice (10 s)
def test_autoattack_is_deterministic_and_no_weaker_than_its_first_stage(trained_model, test_images):
    x, y = test_images[0][:100], test_images[1][:100]
    a = autoattack(trained_model, x, y, 0.005, seed=1, steps=20, queries=300)
    b = autoattack(trained_model, x, y, 0.005, seed=1, steps=20, queries=300)
    assert torch.equal(a, b)
    first = apgd(trained_model, x, y, 0.005, steps=20, seed=1)
    assert (predict(trained_model, a) == y).sum() <= (predict(trained_model, first) == y).sum()


class NoisyModel(nn.Module):
    """A randomised defense: Gaussian noise on the input at every forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


@pytest.mark.slow  # runs 13 s: AutoAttack's rand version with EOT
def test_rand_version_breaks_a_randomised_model(trained_model, test_images):
    x, y = test_images[0][:60], test_images[1][:60]
    noisy = NoisyModel(trained_model)
    torch.manual_seed(0)
    x_adv = autoattack(noisy, x, y, 0.02, version="rand")
    torch.manual_seed(0)
    assert (predict(noisy, x_adv) == y).float().mean() < 0.5 * (predict(noisy, x) == y).float().mean()


def test_any_registry_attack_is_a_perturbation(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()
    p = Perturbation("apgd-ce", eps=0.03, steps=5, seed=3)
    assert torch.equal(p(tiny_model, x, y), apgd(tiny_model, x, y, 0.03, steps=5, seed=3))
    stream = torch.Generator().manual_seed(3)
    assert torch.equal(p(tiny_model, x, y, generator=stream), apgd(tiny_model, x, y, 0.03, steps=5, seed=3))
    aa = Perturbation("autoattack", eps=0.03, steps=5, queries=20, seed=3)
    assert torch.equal(aa(tiny_model, x, y), autoattack(tiny_model, x, y, 0.03, steps=5, queries=20, seed=3))
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        Perturbation("cw", eps=0.03)
    with pytest.raises(ValueError, match="version must be one of"):
        autoattack(tiny_model, x, y, 0.03, version="plus")
