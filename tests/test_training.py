import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import FGSMPerturbation, NoPerturbation, fgsm
from advlab.classifier import AdversarialClassifier
from advlab.defenses import MixedLoss


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_mixed_loss_is_the_alpha_weighted_sum(alpha, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()
    x_adv = fgsm(tiny_model, x, y, 0.05)
    loss, outputs = MixedLoss(alpha, [FGSMPerturbation(0.05)])(tiny_model, x, y)
    expected = alpha * F.cross_entropy(tiny_model(x), y) + (1 - alpha) * F.cross_entropy(tiny_model(x_adv), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    # only the terms with weight are computed
    assert ("clean" in outputs) == (alpha > 0) and ("adv" in outputs) == (alpha < 1)


def test_mixed_loss_without_perturbation_is_clean_loss(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    for perturbations in ([], [NoPerturbation()]):
        loss, outputs = MixedLoss(0.0, perturbations)(tiny_model, x, y)
        assert list(outputs) == ["clean"]
        assert torch.allclose(loss, F.cross_entropy(tiny_model(x), y))


class SpyPerturbation(FGSMPerturbation):
    calls: list

    def __call__(self, model, x, y):
        self.calls.append((x.device, x.shape, model.training))
        return super().__call__(model, x, y)


def test_training_step_perturbs_the_batch_and_mixes_the_loss(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    spy = SpyPerturbation(0.05)
    spy.calls = []
    module = AdversarialClassifier(tiny_model, spy, alpha=0.0)
    module.log = lambda *a, **k: None  # outside a Trainer
    tiny_model.train()
    loss = module.training_step((x, y), 0)
    assert spy.calls == [(x.device, x.shape, True)]
    tiny_model.eval()  # compare in eval mode: BN in train mode depends on the batch
    module.model.eval()
    expected = F.cross_entropy(tiny_model(fgsm(tiny_model, x, y, 0.05)), y)
    assert torch.allclose(module.training_step((x, y), 0), expected, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in tiny_model.parameters()), "the training loss reaches every weight"


def test_clean_training_never_calls_the_perturbation(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    spy = SpyPerturbation(0.05)
    spy.calls = []
    module = AdversarialClassifier(tiny_model, spy, alpha=1.0)
    module.log = lambda *a, **k: None
    module.training_step((x, y), 0)
    assert spy.calls == [] and not module.adversarial
    assert not AdversarialClassifier(tiny_model, NoPerturbation(), alpha=0.0).adversarial


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_refused(alpha, tiny_model):
    with pytest.raises(ValueError, match=r"alpha \(weight of the clean loss\) must be in \[0, 1\]"):
        AdversarialClassifier(tiny_model, alpha=alpha)


def test_unknown_lr_schedule(tiny_model):
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        AdversarialClassifier(tiny_model, lr_schedule="warp")
