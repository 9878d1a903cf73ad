"""Projected Gradient Descent (Madry et al. 2018), L-infinity or L2, with restarts."""

import torch
from torch import nn

from advlab.attacks import _core
from advlab.attacks._core import (check_eps, check_images, check_int, check_norm, check_steps, check_target,
                                 eval_mode)
from advlab.attacks.losses import get_loss


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 30,
    step_size: float | None = None,
    random_start: bool = False,
    target=None,
    norm: str = "linf",
    loss: str = "ce",
    restarts: int = 1,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """x_{t+1} = Proj_{B(x, eps) and [0,1]}(x_t + step_size * d(grad_x loss(x_t))),
    d = sign for L-inf and the unit L2 direction for L2.

    step_size=None means eps / 4 (the seed study's choice). random_start begins at a
    uniform point of the ball. With `target` each step goes toward the target class.
    loss: "ce" (cross-entropy), "margin" (Carlini-Wagner) or "dlr".
    restarts > 1 (each from a new random start after the first) keeps, per image, the
    restart that fooled the model, or else the one with the highest loss.
    seed: the random starts' generator, or its seed (advlab.attacks._core.make_generator).
    """
    eps = check_eps(eps)
    steps = check_steps(steps)
    norm = check_norm(norm)
    loss_fn = get_loss(loss)
    step_size = eps / 4 if step_size is None else check_eps(step_size, "step_size")
    restarts = check_int(restarts, "restarts", 1)
    check_images(x, y)
    target = check_target(y, target)
    x = x.detach()
    if eps == 0:
        return x.clone()

    generator = _core.make_generator(seed, x.device) if (random_start or restarts > 1) else None
    with eval_mode(model):
        best = None
        for restart in range(restarts):
            start = _core.random_start(x, eps, norm, generator) if (random_start or restart > 0) else x.clone()
            x_adv = ascend(model, x, y, start, eps, steps, step_size, norm, loss_fn, target, check=restart == 0)
            if restarts == 1:
                return x_adv
            best = _keep_worst_case(model, x_adv, y, target, loss_fn, best)
        return best[0]


def ascend(model, x, y, x_adv, eps, steps, step_size, norm, loss_fn, target=None, check=False, observe=None):
    """The PGD iterations from x_adv: `steps` steepest-ascent steps on loss_fn(out, y, target),
    each projected onto the eps-ball around x and [0, 1]. Shared with TRADES, whose
    objective is a KL divergence instead of a loss on labels. observe(step, x_adv, out), when
    given, sees every iterate with the model output the step computed anyway (convergence traces)."""
    if norm == "linf":
        # The L-inf ball intersected with [0, 1] is a box: bound it once, then each step is one fused
        # add and one clamp (the same numbers as _core.project, three elementwise passes instead of eight).
        low, high = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    for step in range(steps):
        grad, out, _ = _core.input_gradient(model, x_adv, y, loss_fn, target, check=check and step == 0)
        if observe is not None:
            observe(step, x_adv, out)
        if norm == "linf":
            x_adv = torch.clamp(x_adv.add(grad.sign_(), alpha=step_size), low, high)  # grad is ours to overwrite
        else:
            x_adv = _core.project(x_adv + step_size * _core.steepest_step(grad, norm), x, eps, norm)
    return x_adv


@torch.no_grad()
def _keep_worst_case(model, x_adv, y, target, loss_fn, best):
    """Per image: a fooling point beats a non-fooling one; among equals, the higher loss wins."""
    out = model(x_adv)
    loss = loss_fn(out, y, target)
    hit = _core.fooled(out, y, target)
    if best is None:
        return x_adv, hit, loss
    best_x, best_hit, best_loss = best
    take = (hit & ~best_hit) | ((hit == best_hit) & (loss > best_loss))
    return torch.where(_core.per_image(take, x_adv), x_adv, best_x), best_hit | hit, torch.where(take, loss, best_loss)
