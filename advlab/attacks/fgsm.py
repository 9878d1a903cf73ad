"""Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps."""

import torch
from torch import nn

from advlab.attacks._core import attack_labels, check_eps, check_images, eval_mode, loss_gradient


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target=None) -> torch.Tensor:
    """x' = clip(x + eps * sign(grad_x loss(x, y)), 0, 1).

    With `target` (class indices, or one int for all images) the step goes down the
    loss of the target class instead: x' = clip(x - eps * sign(grad_x loss(x, target))).
    """
    eps = check_eps(eps)
    check_images(x, y)
    labels, direction = attack_labels(y, target)
    name = "y" if target is None else "target"
    with eval_mode(model):
        grad = loss_gradient(model, x, labels, check_name=name)
    return (x.detach() + direction * eps * grad.sign()).clamp(0.0, 1.0)
