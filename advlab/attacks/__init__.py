"""Attacks as plain functions on images in [0, 1], usable with any nn.Module.

    from advlab.attacks import fgsm, pgd, autoattack
    x_adv = pgd(model, x, y, eps=8/255, steps=10)

Every attack returns a new tensor inside the eps-ball around x and inside [0, 1];
x is untouched, no gradient is left on the model's parameters, and the model's
train/eval mode is restored. Random attacks take `seed` (an int or a torch.Generator)
and never touch the global random state.

Each attack is also registered once, with its settings and what it supports
(advlab.attacks.registry): `build_attack("pgd", steps=10)` is the route every config takes.
"""

from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.autoattack import autoattack
from advlab.attacks.fab import accuracy_curve, fab, fab_targeted, minimal_norms
from advlab.attacks.fgsm import fgsm, fgsm_rs, n_fgsm
from advlab.attacks.losses import LOSSES
from advlab.attacks.perturbation import NoPerturbation, Perturbation
from advlab.attacks.pgd import pgd
from advlab.attacks.registry import SPECS, Attack, AttackSpec, build_attack, build_attacks, register
from advlab.attacks.square import square

__all__ = ["fgsm", "fgsm_rs", "n_fgsm", "pgd", "apgd", "apgd_targeted", "fab", "fab_targeted", "minimal_norms",
           "accuracy_curve", "square", "autoattack", "LOSSES", "Perturbation", "NoPerturbation", "SPECS", "Attack",
           "AttackSpec", "build_attack", "build_attacks", "register"]
