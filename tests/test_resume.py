"""A killed training run resumes from its last checkpoint to the same weights as a run never stopped."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

import advlab.training as training
from advlab.classifier import AdversarialClassifier

from helpers import config


class Killed(RuntimeError):
    pass


class KillAtEpoch(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Killed(f"killed at the start of epoch {self.epoch}")


def _cfg(cifar_root, *extra):
    # FGSM with random start: the resumed run must also continue the random stream where it stopped.
    return config("+experiment=defense_comparison", "defense=fgsm_rs", "+debug=smoke", "logger=none",
                  f"data.root={cifar_root}", "trainer.max_epochs=3", "trainer.limit_train_batches=3", *extra)


def test_killed_run_resumes_to_the_same_result(cifar_root, tmp_path, monkeypatch):
    cfg = _cfg(cifar_root)
    uninterrupted, _ = training.train_model(cfg, instantiate(cfg.data), tmp_path / "whole")

    plain_callbacks = training.training_callbacks
    monkeypatch.setattr(training, "training_callbacks", lambda *a: [*plain_callbacks(*a), KillAtEpoch(2)])
    with pytest.raises(Killed):
        training.train_model(cfg, instantiate(cfg.data), tmp_path / "killed")
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(training, "training_callbacks", plain_callbacks)

    # Something else draws from the random stream in between, as a new process would start elsewhere.
    torch.rand(1000)
    resumed_cfg = _cfg(cifar_root, f"resume={tmp_path / 'killed'}")
    resumed, info = training.train_model(resumed_cfg, instantiate(cfg.data), tmp_path / "resumed")
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resume: no checkpoint at .*last\.ckpt"):
        training.resume_path(tmp_path)


def test_a_lightning_checkpoint_rebuilds_the_module(cifar_root, tmp_path):
    cfg = _cfg(cifar_root, "trainer.max_epochs=1")
    model, info = training.train_model(cfg, instantiate(cfg.data), tmp_path)
    # Its hyperparameters are plain values (the run's model, loss, optimizer and validation settings).
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    module = AdversarialClassifier.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").eval()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(x), model(x))
    assert repr(module.loss) == info["loss"] and module.adversarial
    assert module.val_attack.eps == cfg.eps and module.val_attack.name == "pgd"
    assert module.hparams.lr_schedule == cfg.lr_schedule and module.hparams.seed == cfg.seed
    optimizer = module.optimizer_factory(module.parameters())
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["lr"] == cfg.optimizer.lr


def test_a_resumed_run_keeps_the_guards_record(cifar_root, tmp_path, monkeypatch):
    """The guard's best score, epoch, weights and events travel in last.ckpt: resumed after its best epoch, the
    run restores that epoch's weights and reports the same record as a run never stopped."""
    guarded = ("eps=0.004", "optimizer=adam", "lr_schedule=constant", "trainer.max_epochs=5",
               "trainer.limit_train_batches=6", "guard.action=log", "guard.patience=1", "guard.restore_best=true")
    cfg = _cfg(cifar_root, *guarded)
    whole, whole_info = training.train_model(cfg, instantiate(cfg.data), tmp_path / "whole")
    kill_at = 4
    assert whole_info["guard"]["best_epoch"] < kill_at and whole_info["guard"]["restored_best"]
    assert [e["epoch"] for e in whole_info["guard"]["events"] if e["epoch"] >= kill_at], "an event after the kill"

    plain_callbacks = training.training_callbacks
    monkeypatch.setattr(training, "training_callbacks", lambda *a: [*plain_callbacks(*a), KillAtEpoch(kill_at)])
    with pytest.raises(Killed):
        training.train_model(cfg, instantiate(cfg.data), tmp_path / "killed")
    monkeypatch.setattr(training, "training_callbacks", plain_callbacks)
    # weights_only: the guard's state is plain values and tensors
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert saved["RobustGuard"]["best_epoch"] == whole_info["guard"]["best_epoch"]

    resumed_cfg = _cfg(cifar_root, *guarded, f"resume={tmp_path / 'killed'}")
    resumed, info = training.train_model(resumed_cfg, instantiate(cfg.data), tmp_path / "resumed")
    assert info["guard"] == whole_info["guard"]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
