"""Perturbations: the attack a LightningModule applies to each training batch.

A Perturbation is an attack (any entry advlab.attacks.registry.build_attack takes: a name, a
mapping with settings, a `_target_`) bound to the training radius and norm:

    Perturbation("pgd", eps=8/255, norm="linf", steps=10, random_start=True)

and is called as perturbation(model, x, y, generator=None). Random attacks draw from `generator`,
the training run's own stream (advlab.classifier keeps it and saves it with each checkpoint).
Hydra builds one from conf/perturbation/*.yaml; the robust validation attack is one too.
"""

import torch
from torch import nn

from advlab.attacks._core import check_eps
from advlab.attacks.registry import attack_name, build_attack


class Perturbation:
    def __init__(self, attack="fgsm", eps: float = 0.0, norm: str = "linf", **settings):
        self.eps = check_eps(eps, "eps")
        self.norm = norm
        self.attack = build_attack(attack, norm=norm, **settings)

    @property
    def name(self) -> str:
        return attack_name(self.attack)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if getattr(self.attack, "randomised", False):
            return self.attack(model, x, y, self.eps, generator=generator)
        return self.attack(model, x, y, self.eps)

    def __repr__(self) -> str:
        return f"Perturbation({self.attack!r}, eps={self.eps:g})"


class NoPerturbation(Perturbation):
    """Clean training: the batch is used as it is."""

    def __init__(self):
        self.eps, self.norm, self.attack = 0.0, None, None

    @property
    def name(self) -> str:
        return "none"

    def __call__(self, model, x, y, generator=None):
        return x

    def __repr__(self) -> str:
        return "NoPerturbation()"
