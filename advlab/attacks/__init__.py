"""Attacks as plain functions on images in [0, 1], usable with any nn.Module.

    from advlab.attacks import fgsm, pgd, autoattack
    x_adv = pgd(model, x, y, eps=8/255, steps=10)

Every attack returns a new tensor inside the eps-ball around x and inside [0, 1];
x is untouched, no gradient is left on the model's parameters, and the model's
train/eval mode is restored.
"""

from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.autoattack import autoattack
from advlab.attacks.fab import accuracy_curve, fab, fab_targeted, minimal_norms
from advlab.attacks.fgsm import fgsm
from advlab.attacks.losses import LOSSES
from advlab.attacks.perturbation import (
    AttackPerturbation,
    FGSMPerturbation,
    NFGSMPerturbation,
    NoPerturbation,
    Perturbation,
    PGDPerturbation,
)
from advlab.attacks.pgd import pgd
from advlab.attacks.square import square

__all__ = ["fgsm", "pgd", "apgd", "apgd_targeted", "fab", "fab_targeted", "minimal_norms", "accuracy_curve",
           "square", "autoattack", "LOSSES", "Perturbation", "NoPerturbation", "FGSMPerturbation",
           "PGDPerturbation", "NFGSMPerturbation", "AttackPerturbation"]
