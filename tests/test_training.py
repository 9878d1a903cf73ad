import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import NoPerturbation, Perturbation, fgsm
from advlab.classifier import AdversarialClassifier
from advlab.defenses import MixedLoss


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_mixed_loss_is_the_alpha_weighted_sum(alpha, tiny_model, synthetic_batch):
    x, y = synthetic_batch
    tiny_model.eval()
    x_adv = fgsm(tiny_model, x, y, 0.05)
    loss, outputs = MixedLoss(alpha, [Perturbation("fgsm", eps=0.05)])(tiny_model, x, y)
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


class SpyPerturbation(Perturbation):
    """FGSM at eps, recording what each call receives."""

    def __init__(self, eps):
        super().__init__("fgsm", eps=eps)
        self.calls = []

    def __call__(self, model, x, y, generator=None):
        self.calls.append((x.device, x.shape, model.training, generator))
        return super().__call__(model, x, y, generator=generator)


def test_training_step_perturbs_the_batch_and_mixes_the_loss(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    spy = SpyPerturbation(0.05)
    module = AdversarialClassifier(tiny_model, spy, alpha=0.0, seed=4)
    module.log = lambda *a, **k: None  # outside a Trainer
    tiny_model.train()
    loss = module.training_step((x, y), 0)
    assert spy.calls == [(x.device, x.shape, True, module.generator(x.device))]
    assert module.generator(x.device).initial_seed() == 4, "the perturbations' stream: the module's, from its seed"
    tiny_model.eval()  # compare in eval mode: BN in train mode depends on the batch
    module.model.eval()
    expected = F.cross_entropy(tiny_model(fgsm(tiny_model, x, y, 0.05)), y)
    assert torch.allclose(module.training_step((x, y), 0), expected, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in tiny_model.parameters()), "the training loss reaches every weight"


def test_random_perturbations_draw_from_the_modules_stream_which_checkpoints_carry(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    module = AdversarialClassifier(tiny_model, Perturbation("fgsm-rs", eps=0.05), alpha=0.0, seed=4)
    module.log = lambda *a, **k: None
    fresh = torch.Generator().manual_seed(4).get_state()
    before = torch.get_rng_state()
    module.training_step((x, y), 0)
    assert torch.equal(torch.get_rng_state(), before), "the perturbation drew from the global stream"
    after_one = module.generator(x.device).get_state()
    assert not torch.equal(after_one, fresh), "the perturbation did not draw from the module's stream"
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    module.training_step((x, y), 1)
    assert not torch.equal(module.generator(x.device).get_state(), after_one), "each step draws anew"
    resumed = AdversarialClassifier(tiny_model, Perturbation("fgsm-rs", eps=0.05), alpha=0.0, seed=4)
    resumed.on_load_checkpoint(checkpoint)
    assert torch.equal(resumed.generator(x.device).get_state(), after_one), "a resumed run continues the stream"


def test_clean_training_never_calls_the_perturbation(tiny_model, synthetic_batch):
    x, y = synthetic_batch
    spy = SpyPerturbation(0.05)
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


def test_validation_accuracies_are_torchmetrics_over_every_image(tiny_model):
    """val/acc and val/adv_acc: MulticlassAccuracy objects, exact over uneven batches (not a mean of batch means)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset
    from torchmetrics.classification import MulticlassAccuracy

    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(10, 3, 16, 16, generator=g), torch.randint(0, 10, (10,), generator=g)
    module = AdversarialClassifier(tiny_model, val_attack=Perturbation("fgsm", eps=0.1), val_attack_batches=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, inference_mode=False)
    (logged,) = trainer.validate(module, DataLoader(TensorDataset(x, y), batch_size=4), verbose=False)
    tiny_model.eval()
    with torch.no_grad():
        assert logged["val/acc"] == pytest.approx((tiny_model(x).argmax(1) == y).float().mean().item())
    x_adv = fgsm(tiny_model, x[:8], y[:8], 0.1)  # the first two batches only
    with torch.no_grad():
        assert logged["val/adv_acc"] == pytest.approx((tiny_model(x_adv).argmax(1) == y[:8]).float().mean().item())
    assert {k: type(m) for k, m in module.accuracy.items()} == {"val": MulticlassAccuracy, "val_adv": MulticlassAccuracy}
    assert module.accuracy["val"].num_classes == 10  # read off the model's output


def _fit_logged(tmp_path, monkeypatch=None, always_log=False):
    """A linear model fitted with lr 0 (fixed weights) for 2 epochs of 3 uneven batches, logged to CSV
    every 2 steps; returns the module, the images and the CSV rows."""
    import csv

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(10, 3, 4, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    module = AdversarialClassifier(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.0), lr_schedule="constant")
    if always_log:
        monkeypatch.setattr(AdversarialClassifier, "_writes_step_logs", lambda self: True)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=CSVLogger(tmp_path), log_every_n_steps=2,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True))
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        return module, x, y, list(csv.DictReader(f))


def test_training_accuracy_is_a_torchmetrics_epoch_value_and_the_loss_keeps_every_written_step(tmp_path, monkeypatch):
    """train/clean_acc: one value per epoch over all the epoch's images (weights fixed here, so it is the
    model's accuracy on the 10 images), reset between epochs; train/loss is logged on exactly the steps
    Lightning writes (log_every_n_steps), the same steps as when it is logged on every step."""
    module, x, y, rows = _fit_logged(tmp_path / "gated")
    with torch.no_grad():
        expected = (module.model(x).argmax(1) == y).float().mean().item()
    epochs = [row for row in rows if row["train/clean_acc"]]
    assert [int(row["epoch"]) for row in epochs] == [0, 1]
    assert all(float(row["train/clean_acc"]) == pytest.approx(expected) for row in epochs)
    assert module.accuracy["train_clean"]._update_count == 0, "reset after each epoch"
    loss_steps = [int(row["step"]) for row in rows if row["train/loss"]]
    assert loss_steps == [1, 3, 5]
    *_, every_step = _fit_logged(tmp_path / "always", monkeypatch, always_log=True)
    assert [int(row["step"]) for row in every_step if row["train/loss"]] == loss_steps


def test_the_epochs_mean_training_loss_is_logged_per_epoch_whatever_log_every_n_steps(tmp_path):
    """train/loss_epoch: one value per epoch, the mean cross-entropy over every image of the epoch (weights
    fixed, so it equals the fixed model's loss on the 10 images), though 3 batches per epoch are fewer than
    log_every_n_steps would need for a step value in every epoch."""
    import torch.nn.functional as F

    module, x, y, rows = _fit_logged(tmp_path)
    with torch.no_grad():
        expected = F.cross_entropy(module.model(x), y).item()
    epochs = [row for row in rows if row.get("train/loss_epoch")]
    assert [int(row["epoch"]) for row in epochs] == [0, 1]
    assert all(float(row["train/loss_epoch"]) == pytest.approx(expected, rel=1e-5) for row in epochs)
