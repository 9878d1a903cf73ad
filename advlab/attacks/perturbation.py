"""Perturbations: the attack a LightningModule applies to each training batch.

A Perturbation is called as `perturbation(model, x, y)` and returns the perturbed
batch on x's device. Hydra builds one from `conf/perturbation/*.yaml`; new kinds
only need a `__call__` with that signature.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.attacks import _core
from advlab.attacks._core import check_eps, check_norm, check_steps, eval_mode
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
    """FGSM from the clean image (the seed study), or from a random point of the ball
    (`random_start`, "FGSM-RS" of Wong et al. 2020, whose step is 1.25 eps by default)."""

    eps: float
    random_start: bool = False
    step_size: float | None = None
    name = "fgsm"

    def __post_init__(self):
        self.eps = check_eps(self.eps)
        if self.step_size is not None:
            self.step_size = check_eps(self.step_size, "step_size")

    def __call__(self, model, x, y):
        if not self.random_start and self.step_size is None:
            return fgsm(model, x, y, self.eps)
        x = x.detach()
        start = _core.random_start(x, self.eps) if self.random_start else x
        step = (1.25 * self.eps if self.random_start else self.eps) if self.step_size is None else self.step_size
        return _core.project(start + step * _signed_gradient(model, start, y), x, self.eps)


@dataclass
class NFGSMPerturbation(Perturbation):
    """N-FGSM (de Jorge et al. 2022): uniform noise of radius `noise` (2 eps by default),
    then one signed step of `step_size` (eps), and no projection back onto the eps-ball.

    Its perturbations reach noise + step_size (3 eps by default) in L-inf: the larger,
    noisier training perturbation is what prevents catastrophic overfitting without
    the cost of more steps. Images stay in [0, 1].
    """

    eps: float
    noise: float | None = None
    step_size: float | None = None
    name = "n-fgsm"

    def __post_init__(self):
        self.eps = check_eps(self.eps)
        self.noise = 2 * self.eps if self.noise is None else check_eps(self.noise, "noise")
        self.step_size = self.eps if self.step_size is None else check_eps(self.step_size, "step_size")

    @property
    def radius(self) -> float:
        return self.noise + self.step_size

    def __call__(self, model, x, y):
        x = x.detach()
        start = (x + torch.empty_like(x).uniform_(-self.noise, self.noise)).clamp(0.0, 1.0)
        return (start + self.step_size * _signed_gradient(model, start, y)).clamp(0.0, 1.0)


def _signed_gradient(model, x, y):
    with eval_mode(model):
        grad, _, _ = _core.input_gradient(model, x, y)
    return grad.sign()


@dataclass
class PGDPerturbation(Perturbation):
    eps: float
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    norm: str = "linf"
    name = "pgd"

    def __post_init__(self):
        self.eps = check_eps(self.eps)
        self.steps = check_steps(self.steps)
        self.norm = check_norm(self.norm)
        if self.step_size is not None:
            self.step_size = check_eps(self.step_size, "step_size")

    def __call__(self, model, x, y):
        return pgd(model, x, y, self.eps, self.steps, self.step_size, self.random_start, norm=self.norm)


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
