"""Attacks on purification defenses, naive and adaptive (Athalye, Carlini & Wagner 2018).

A purification defense (advlab.defenses.purification.Purified) is
`classifier(purify(x))` with a random purifier and, optionally, a step with no
useful gradient. It is evaluated twice:
- naive: the attacker ignores the purifier and attacks the classifier alone; the
  images it finds are then judged by the whole defended model. This is what the
  defense was designed against, and the number it gives is an upper bound.
- adaptive: PGD through the purifier, on the expectation over its randomness (EOT,
  with autoattack.ExpectationModel) and with every non-differentiable step
  differentiated as the identity (BPDA). This is the number to report.

Protocol with the defenses: a model is a purification defense when it has both
`purify` and `classifier` (a bare `.classifier` is not enough: torchvision's VGG
calls its head that), and a module with a non-differentiable step has a boolean
`bpda` attribute that makes it use BPDA(step) while it is True.
"""

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from advlab.attacks._core import check_int
from advlab.attacks.autoattack import ExpectationModel
from advlab.attacks.pgd import pgd


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class BPDA(nn.Module):
    """Backward Pass Differentiable Approximation with the identity: the forward pass is
    the real step fn(x); the backward pass is the identity's (gradient passed through).

    Right for steps that keep the input close to itself (quantisation, JPEG, median
    filters), which is what makes the identity a fair stand-in for their derivative.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _StraightThrough.apply(x, self.fn)
        if out.shape != x.shape:
            raise ValueError(f"BPDA needs a step that keeps the input's shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return out


@contextmanager
def bpda_enabled(model: nn.Module):
    """Switch on `bpda` in every submodule that has the flag, then put back the values it had.

    A flag rather than a swapped-in module: predictions do not change (BPDA's forward
    pass is the real step), nothing in the model's state_dict moves, and the defense
    keeps the knowledge of which of its steps are non-differentiable.
    """
    flagged = [(m, m.bpda) for m in model.modules() if isinstance(getattr(m, "bpda", None), bool)]
    for m, _ in flagged:
        m.bpda = True
    try:
        yield
    finally:
        for m, before in flagged:
            m.bpda = before


def is_purification(model: nn.Module) -> bool:
    return hasattr(model, "purify") and isinstance(getattr(model, "classifier", None), nn.Module)


def naive_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **pgd_settings) -> torch.Tensor:
    """PGD aimed at a purification defense's classifier alone (plain PGD for other models);
    pgd_settings as advlab.attacks.pgd takes them.

    The returned images are in the eps-ball around x either way; the evaluation then
    classifies them with the whole defended model, purifier included.
    """
    return pgd(model.classifier if is_purification(model) else model, x, y, eps, **pgd_settings)


def adaptive_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 30,
                 step_size: float | None = None, eot_samples: int = 10, norm: str = "linf",
                 random_start: bool = True, loss: str = "ce", restarts: int = 1, target=None,
                 seed: int | torch.Generator = 0) -> torch.Tensor:
    """PGD through the purifier on the mean log-probabilities of `eot_samples` forward passes,
    with BPDA for the non-differentiable steps. Other arguments as advlab.attacks.pgd.

    Random start by default: a randomised defense gives a noisy first gradient at x
    anyway, and starting anywhere in the ball costs nothing.
    """
    eot_samples = check_int(eot_samples, "eot_samples", 1)
    # pgd's mode guard puts the wrapper, and so `model`, in eval mode and restores the mode it had.
    with bpda_enabled(model):
        return pgd(ExpectationModel(model, eot_samples), x, y, eps, steps=steps, step_size=step_size,
                   random_start=random_start, target=target, norm=norm, loss=loss, restarts=restarts, seed=seed)
