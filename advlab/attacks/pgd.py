"""Projected Gradient Descent in the L-infinity ball (Madry et al. 2018)."""

import torch
from torch import nn

from advlab.attacks._core import (
    attack_labels,
    check_eps,
    check_images,
    check_steps,
    eval_mode,
    loss_gradient,
    project,
)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 30,
    step_size: float | None = None,
    random_start: bool = False,
    target=None,
) -> torch.Tensor:
    """x_{t+1} = Proj_{B(x, eps) and [0,1]}(x_t + step_size * sign(grad_x loss(x_t, y))).

    step_size=None means eps / 4 (the seed study's choice). random_start begins at a
    uniform point of the ball. With `target` each step descends the target's loss.
    """
    eps = check_eps(eps)
    steps = check_steps(steps)
    step_size = eps / 4 if step_size is None else check_eps(step_size, "step_size")
    check_images(x, y)
    labels, direction = attack_labels(y, target)
    name = "y" if target is None else "target"

    x = x.detach()
    x_adv = x.clone()
    if random_start:
        x_adv = project(x_adv + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    with eval_mode(model):
        for step in range(steps):
            # The class-range check needs the model's output width: do it on the first step only.
            grad = loss_gradient(model, x_adv, labels, check_name=name if step == 0 else None)
            x_adv = project(x_adv + direction * step_size * grad.sign(), x, eps)
    return x_adv
