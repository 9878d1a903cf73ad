"""The LightningModule: a classifier trained on clean and/or perturbed batches.

training_step reads top to bottom: perturb the batch on its device, take the
alpha-mixed loss, log. The perturbation is any callable (model, x, y) -> x'.
"""

import pytorch_lightning as pl
import torch
from torch import nn

from advlab.attacks.perturbation import NoPerturbation, Perturbation
from advlab.defenses.mixed_loss import check_alpha, mixed_loss

LR_SCHEDULES = ("onecycle", "cosine", "constant")


class AdversarialClassifier(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        perturbation: Perturbation | None = None,
        alpha: float = 1.0,
        optimizer=None,
        lr_schedule: str = "onecycle",
    ):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.model = model
        self.perturbation = perturbation or NoPerturbation()
        self.alpha = check_alpha(alpha)
        # A factory params -> optimizer (Hydra's `_partial_: true`); SGD when none is given.
        self.optimizer_factory = optimizer or (lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))
        self.lr_schedule = lr_schedule

    @property
    def adversarial(self) -> bool:
        return not isinstance(self.perturbation, NoPerturbation) and self.alpha < 1

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x_adv = self.perturbation(self.model, x, y) if self.adversarial else None
        loss, outputs = mixed_loss(self.model, x, x_adv, y, self.alpha)
        self.log("train/loss", loss, prog_bar=True)
        for kind, out in outputs.items():
            self.log(f"train/{kind}_acc", (out.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.model(x).argmax(1) == y).float().mean(), prog_bar=True)
        if self.adversarial:
            # Lightning validates under no_grad; the attack needs input gradients.
            with torch.enable_grad():
                x_adv = self.perturbation(self.model, x, y)
            self.log("val/adv_acc", (self.model(x_adv).argmax(1) == y).float().mean(), prog_bar=True)

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
