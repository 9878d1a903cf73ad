"""What every gradient attack shares: argument checks, the mode guard, the input gradient.

Kept apart from the attacks themselves so that each attack file reads as its update rule.
"""

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def check_eps(eps: float, name: str = "eps") -> float:
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (pixel units, images in [0, 1]), got {eps}")
    return eps


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError("x must be a floating-point image tensor with values in [0, 1]")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"x must lie in [0, 1] (pixel space; normalise inside the model), "
            f"got values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor of {x.shape[0]} class indices (one per image), got {shape}")


def attack_labels(y: torch.Tensor, target) -> tuple[torch.Tensor, float]:
    """Labels the loss is taken against, and the direction of the step.

    Untargeted: climb the loss of the true class (+1). Targeted: descend the loss
    of the target class (-1).
    """
    if target is None:
        return y, 1.0
    if not torch.is_tensor(target):
        target = torch.full_like(y, int(target))
    if target.dim() == 0:
        target = target.expand_as(y)
    if target.shape != y.shape:
        raise ValueError(f"target must hold one class index per image ({y.shape[0]}), got shape {tuple(target.shape)}")
    if target.is_floating_point():
        raise ValueError("target must be integer class indices")
    if target.numel() and target.min() < 0:
        raise ValueError(f"target must be class indices >= 0, got {target.min().item()}")
    return target.to(y.device), -1.0


def check_classes(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes - 1}], "
            f"got values in [{labels.min().item()}, {labels.max().item()}]"
        )


@contextmanager
def eval_mode(model: nn.Module):
    """Attack a model in eval mode (batch-norm uses running statistics and is not
    updated by the search), then put back the mode the caller had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def loss_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, check_name: str | None = None):
    """Gradient of the summed cross-entropy with respect to the images only.

    torch.autograd.grad with inputs=x never writes .grad on the parameters.
    cross_entropy applies log-softmax, which leaves log-probabilities unchanged,
    so the model may return logits or log-probabilities. The sum (not mean) keeps
    each image's gradient independent of the batch size.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if check_name is not None:
            check_classes(labels, out.shape[1], check_name)
        loss = F.cross_entropy(out, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Closest point of the L-infinity ball of radius eps around x that is also in [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
