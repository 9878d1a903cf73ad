"""Defenses. Adversarial training is a training loss: loss(model, x, y) -> (loss, outputs)."""

from advlab.defenses.mixed_loss import MixedLoss, check_alpha
from advlab.defenses.trades import TradesLoss

__all__ = ["MixedLoss", "TradesLoss", "check_alpha"]
