"""Attacks as plain functions on images in [0, 1], usable with any nn.Module.

    from advlab.attacks import fgsm, pgd
    x_adv = pgd(model, x, y, eps=8/255, steps=10)

Every attack returns a new tensor inside the eps-ball around x and inside [0, 1];
x is untouched, no gradient is left on the model's parameters, and the model's
train/eval mode is restored.
"""

from advlab.attacks.fgsm import fgsm
from advlab.attacks.losses import LOSSES
from advlab.attacks.perturbation import FGSMPerturbation, NoPerturbation, Perturbation, PGDPerturbation
from advlab.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm, "pgd": pgd}

__all__ = ["fgsm", "pgd", "ATTACKS", "LOSSES", "Perturbation", "NoPerturbation", "FGSMPerturbation",
           "PGDPerturbation"]
