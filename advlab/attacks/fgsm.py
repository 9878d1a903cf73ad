"""Single-step attacks: FGSM (Goodfellow et al. 2015) and the two single-step perturbations of
fast adversarial training, FGSM-RS (Wong et al. 2020) and N-FGSM (de Jorge et al. 2022).

In L2 the one step follows the normalised gradient instead of its sign (the "fast gradient method").
"""

import torch
from torch import nn

from advlab.attacks._core import (check_eps, check_images, check_norm, check_target, eval_mode,
                                 input_gradient, make_generator, project, random_start, steepest_step)


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


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
            step_size: float | None = None, seed: int | torch.Generator = 0) -> torch.Tensor:
    """FGSM from a uniform random point of the ball, projected back onto it ("FGSM-RS").

    x' = P(x0 + step_size * d(grad loss(x0))), x0 uniform in B(x, eps), d = sign (L-inf) or the
    unit L2 direction (L2); step_size None means 1.25 eps (the paper's choice in L-inf).
    """
    eps, norm = check_eps(eps), check_norm(norm)
    step_size = 1.25 * eps if step_size is None else check_eps(step_size, "step_size")
    check_images(x, y)
    x = x.detach()
    start = random_start(x, eps, norm, make_generator(seed, x.device))
    with eval_mode(model):
        grad, _, _ = input_gradient(model, start, y, check=True)
    return project(start + step_size * steepest_step(grad, norm), x, eps, norm)


def n_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
           noise: float | None = None, step_size: float | None = None,
           seed: int | torch.Generator = 0) -> torch.Tensor:
    """N-FGSM: uniform noise of radius `noise` (2 eps), one signed step of `step_size` (eps), and
    no projection back onto the eps-ball: the perturbation reaches noise + step_size (3 eps).

    The larger, noisier training perturbation is what prevents catastrophic overfitting without
    the cost of more steps. Images stay in [0, 1]. L-inf only: the method is a box of noise and a
    sign step, and has no L2 form in the paper (use fgsm-rs or pgd for L2 training).
    """
    eps = check_eps(eps)
    if check_norm(norm) != "linf":
        raise ValueError(f"norm: n-fgsm is defined for linf only, got {norm!r} (for l2 training use "
                         "perturbation=fgsm_rs or perturbation=pgd)")
    noise = 2 * eps if noise is None else check_eps(noise, "noise")
    step_size = eps if step_size is None else check_eps(step_size, "step_size")
    check_images(x, y)
    x = x.detach()
    generator = make_generator(seed, x.device)
    start = (x + torch.empty_like(x).uniform_(-noise, noise, generator=generator)).clamp(0.0, 1.0)
    with eval_mode(model):
        grad, _, _ = input_gradient(model, start, y, check=True)
    return (start + step_size * grad.sign()).clamp(0.0, 1.0)
