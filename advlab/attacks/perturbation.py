"""Perturbations: the attack a LightningModule applies to each training batch.

A Perturbation is called as `perturbation(model, x, y)` and returns the perturbed
batch on x's device. Hydra builds one from `conf/perturbation/*.yaml`; new kinds
only need a `__call__` with that signature.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.attacks._core import check_eps, check_steps
from advlab.attacks.fgsm import fgsm
from advlab.attacks.pgd import pgd


class Perturbation:
    name = "perturbation"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NoPerturbation(Perturbation):
    """Clean training: the batch is used as it is."""

    name = "none"

    def __call__(self, model, x, y):
        return x

    def __repr__(self) -> str:
        return "NoPerturbation()"


@dataclass
class FGSMPerturbation(Perturbation):
    eps: float
    name = "fgsm"

    def __post_init__(self):
        self.eps = check_eps(self.eps)

    def __call__(self, model, x, y):
        return fgsm(model, x, y, self.eps)


@dataclass
class PGDPerturbation(Perturbation):
    eps: float
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    name = "pgd"

    def __post_init__(self):
        self.eps = check_eps(self.eps)
        self.steps = check_steps(self.steps)
        if self.step_size is not None:
            self.step_size = check_eps(self.step_size, "step_size")

    def __call__(self, model, x, y):
        return pgd(model, x, y, self.eps, self.steps, self.step_size, self.random_start)


@dataclass
class AttackPerturbation(Perturbation):
    """Any attack of the registry (apgd-ce, square, autoattack, ...) as a training perturbation.

    `settings` are build_attack's keyword arguments (apgd_steps=..., square_queries=...).
    """

    attack: str
    eps: float
    norm: str = "linf"
    settings: dict = field(default_factory=dict)
    name = "attack"

    def __post_init__(self):
        from advlab.attacks.registry import build_attack  # the registry imports this package

        self.eps = check_eps(self.eps)
        self._attack = build_attack(self.attack, norm=self.norm, **dict(self.settings))

    def __call__(self, model, x, y):
        return self._attack(model, x, y, self.eps)
