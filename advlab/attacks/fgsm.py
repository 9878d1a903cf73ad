"""Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps.

In L2 the one step follows the normalised gradient instead (the "fast gradient method").
"""

import torch
from torch import nn

from advlab.attacks._core import (
    check_eps,
    check_images,
    check_norm,
    check_target,
    eval_mode,
    input_gradient,
    steepest_step,
)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target=None,
         norm: str = "linf") -> torch.Tensor:
    """x' = clip(x + eps * sign(grad_x loss(x, y)), 0, 1)   (L2: grad / ||grad||_2 instead of sign).

    With `target` (class indices, or one int for all images) the step goes down the
    loss of the target class instead: x' = clip(x - eps * sign(grad_x loss(x, target))).
    Clipping to [0, 1] only moves pixels back toward x, so x' stays in the eps-ball.
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    check_images(x, y)
    target = check_target(y, target)
    with eval_mode(model):
        # The objective is -loss(x, target) when targeted, so one ascent step covers both cases.
        grad, _, _ = input_gradient(model, x, y, target=target, check=True)
    return (x.detach() + eps * steepest_step(grad, norm)).clamp(0.0, 1.0)
