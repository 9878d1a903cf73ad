"""The LightningModule: a classifier trained with a (possibly adversarial) loss.

training_step reads top to bottom: the loss object perturbs the batch on its device
and returns the loss with the outputs it computed; log. Any callable
loss(model, x, y, generator=None) -> (loss, {name: output}) works: MixedLoss (the seed study's
alpha-mixed loss over one or several perturbations) or TradesLoss.

Validation measures clean accuracy and, when `val_attack` is given, accuracy under
that attack on the first `val_attack_batches` batches: the robust-overfitting and
catastrophic-overfitting signal that advlab.callbacks.RobustGuard acts on. Accuracies are
torchmetrics metrics logged as objects once per epoch (train/<term>_acc over the epoch's training
images; val/acc, val/adv_acc over every validation image), so Lightning reduces them across DDP processes.

Built from a run's config (advlab.build.build_classifier), the module saves that config's
pieces as plain hyperparameters (`config`), so a Lightning checkpoint rebuilds it:

    module = AdversarialClassifier.load_from_checkpoint("outputs/RUN/checkpoints/last.ckpt")
"""

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from advlab.attacks.perturbation import Perturbation
from advlab.defenses.mixed_loss import MixedLoss
from advlab.models import build_model

LR_SCHEDULES = ("onecycle", "cosine", "constant")


# The module's parts from plain values (advlab.build.classifier_config), so that a checkpoint's
# hyperparameters alone rebuild it (load_from_checkpoint).
def config_model(config: dict) -> nn.Module:
    model = build_model(**config["model"])
    if config.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if config.get("compile") else model


def config_loss(config: dict):
    # _convert_="all" passes lists as Python lists.
    return instantiate(config["loss"], _convert_="all")


def config_optimizer(config: dict):
    return instantiate(config["optimizer"])  # a factory params -> optimizer (_partial_: true)


def config_val_attack(config: dict) -> Perturbation | None:
    spec = config.get("val_attack")
    return None if spec is None else Perturbation(spec["attack"], eps=spec["eps"], norm=spec["norm"])


class AdversarialClassifier(pl.LightningModule):
    """model, loss, optimizer (a factory params -> optimizer) and val_attack are objects; or `config`
    (advlab.build.classifier_config: plain values) builds the ones not given. num_classes: of the
    accuracy metrics; None: the width of the model's output, read on the first batch."""

    def __init__(
        self,
        model: nn.Module | None = None,
        perturbation: Perturbation | None = None,
        alpha: float = 1.0,
        optimizer=None,
        lr_schedule: str = "onecycle",
        loss=None,
        val_attack: Perturbation | None = None,
        val_attack_batches: int | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        if OmegaConf.is_config(config):
            config = OmegaConf.to_container(config, resolve=True)
        # Plain values only: checkpoints are read with weights_only=True. The objects are not saved;
        # load_from_checkpoint rebuilds them from `config` (or takes them as arguments).
        self.save_hyperparameters(ignore=["model", "perturbation", "optimizer", "loss", "val_attack"])
        if config is not None:
            model = config_model(config) if model is None else model
            if loss is None and perturbation is None:
                loss = config_loss(config)
            optimizer = optimizer or config_optimizer(config)
            val_attack = val_attack or config_val_attack(config)
        if model is None:
            raise ValueError("AdversarialClassifier needs a model, or config= to build one from")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if val_attack_batches is not None and int(val_attack_batches) < 1:
            raise ValueError(f"val_attack_batches must be >= 1 or null (all), got {val_attack_batches}")
        self.model = model
        # `perturbation` and `alpha` are the seed study's two-term loss, kept as a shorthand.
        self.loss = loss if loss is not None else MixedLoss(alpha, [perturbation] if perturbation else [])
        self.val_attack, self.val_attack_batches = val_attack, val_attack_batches
        # A factory params -> optimizer (Hydra's `_partial_: true`); SGD when none is given.
        self.optimizer_factory = optimizer or (lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))
        self.lr_schedule = lr_schedule
        # The training perturbations' random stream (random starts, N-FGSM noise, TRADES' start): one
        # generator on the batch's device, seeded once and saved with every checkpoint, so the global
        # stream (shuffling, dropout) is the same whatever the defense draws.
        self.seed, self._generator, self._generator_state = seed, None, None
        # Accuracy metrics by name (train_<term>, val, val_adv), made on first use for num_classes.
        self.num_classes = None if num_classes is None else int(num_classes)
        self.accuracy = nn.ModuleDict()
        self.epoch_loss = MeanMetric()  # train/loss_epoch: the mean training loss per image over each epoch

    def _accuracy(self, key: str, logits: torch.Tensor) -> MulticlassAccuracy:
        if key not in self.accuracy:
            num_classes = self.num_classes or logits.shape[1]
            self.accuracy[key] = MulticlassAccuracy(num_classes, average="micro").to(logits.device)
        return self.accuracy[key]

    def _log_accuracy(self, name: str, key: str, logits: torch.Tensor, y: torch.Tensor):
        """Accumulate the batch into the metric; Lightning computes, syncs and resets it at the epoch's end."""
        self._accuracy(key, logits).update(logits, y)
        self.log(name, self.accuracy[key], prog_bar=True, metric_attribute=f"accuracy.{key}")

    def on_train_epoch_end(self):
        # Training accuracy (metrics train_<term>) and the epoch's mean loss are logged once per epoch, over the
        # epoch's images, as the lightning-hydra-template does: a metric logged every step costs a compute and
        # Lightning's bookkeeping per batch, about 15% of the seed CNN's training step on a CPU (bench/training.py);
        # updating one costs a few tensor additions.
        self.log("train/loss_epoch", self.epoch_loss, metric_attribute="epoch_loss")
        for key, metric in self.accuracy.items():
            if key.startswith("train_"):
                self.log(f"train/{key.removeprefix('train_')}_acc", metric, prog_bar=True,
                         metric_attribute=f"accuracy.{key}")

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
        return self._generator

    @property
    def adversarial(self) -> bool:
        return bool(getattr(self.loss, "adversarial", False))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, outputs = self.loss(self.model, x, y, generator=self.generator(x.device))
        if hasattr(self.model, "extra_loss"):  # a model's own objective, e.g. the ELBO of a purifying VAE
            loss = loss + self.model.extra_loss(x)
        self.epoch_loss.update(loss.detach(), weight=len(y))
        if self._writes_step_logs():
            self.log("train/loss", loss, prog_bar=True)
        for kind, out in outputs.items():  # accumulated here, logged at the epoch's end (on_train_epoch_end)
            self._accuracy(f"train_{kind}", out).update(out.detach(), y)
        return loss

    def _writes_step_logs(self) -> bool:
        """Whether Lightning writes this training step's logged values to the loggers: every
        trainer.log_every_n_steps-th step. The other steps' values are dropped, and each self.log call
        costs about 1 ms of Python bookkeeping, 5% of the seed CNN's step on a CPU (bench/training.py)."""
        if self._trainer is None:  # training_step called directly (tests): log as always
            return True
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._log_accuracy("val/acc", "val", self.model(x), y)
        if self.val_attack is not None and (self.val_attack_batches is None or batch_idx < self.val_attack_batches):
            # Lightning validates under no_grad; the attack needs input gradients.
            with torch.enable_grad():
                x_adv = self.val_attack(self.model, x, y)
            self._log_accuracy("val/adv_acc", "val_adv", self.model(x_adv), y)

    # Random starts (FGSM-RS, PGD, TRADES) and shuffling draw from torch's generators; saving
    # them with the epoch's checkpoint makes a resumed run continue exactly as the killed one would have.
    def on_save_checkpoint(self, checkpoint):
        checkpoint["advlab_rng"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["advlab_rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self._generator is not None:
            checkpoint["advlab_rng"]["perturbations"] = self._generator.get_state()

    def on_load_checkpoint(self, checkpoint):
        rng = checkpoint.get("advlab_rng", {})
        self._generator, self._generator_state = None, rng.get("perturbations")
        if self._trainer is None:  # load_from_checkpoint: a model to use, not a run to continue
            return
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_schedule == "constant":
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        if self.lr_schedule == "onecycle":
            max_lr = [group["lr"] for group in optimizer.param_groups]
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
