"""Defenses. Adversarial training is a loss over clean and perturbed batches."""

from advlab.defenses.mixed_loss import check_alpha, mixed_loss

__all__ = ["mixed_loss", "check_alpha"]
