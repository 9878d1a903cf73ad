"""TRADES (Zhang et al. 2019): a clean loss plus beta times a smoothness term,

    l'(x, y) = CE(f(x), y) + beta * KL(f(x) || f(x')),   x' = argmax_{x' in B(x, eps)} KL(f(x) || f(x')).

The inner maximisation is PGD on the KL divergence from the clean prediction (from a
point 0.001 * N(0, 1) away from x, as the paper does: at x itself the KL gradient is
zero). Larger beta trades clean accuracy for robustness; the paper uses 6 at 8/255.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks._core import check_eps, check_norm, check_steps, eval_mode, make_generator, project
from advlab.attacks.pgd import ascend


def kl_from(reference_log_probs: torch.Tensor):
    """A loss for ascend(): per-image KL(reference || model output), ignoring labels."""
    def loss_fn(out, y, target):
        return F.kl_div(out.log_softmax(1), reference_log_probs, reduction="none", log_target=True).sum(1)
    return loss_fn


class TradesLoss:
    def __init__(self, eps: float, beta: float = 6.0, steps: int = 10, step_size: float | None = None,
                 norm: str = "linf"):
        self.eps = check_eps(eps)
        beta = float(beta)
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"loss.beta (weight of the TRADES smoothness term) must be a number >= 0, got {beta}")
        self.beta, self.steps, self.norm = beta, check_steps(steps), check_norm(norm)
        self.step_size = self.eps / 4 if step_size is None else check_eps(step_size, "step_size")

    adversarial = True

    def perturb(self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | int = 0) -> torch.Tensor:
        x = x.detach()
        noise = torch.randn(x.shape, generator=make_generator(generator, x.device), device=x.device, dtype=x.dtype)
        with eval_mode(model):
            with torch.no_grad():
                reference = model(x).log_softmax(1)
            start = project(x + 0.001 * noise, x, self.eps, self.norm)
            return ascend(model, x, None, start, self.eps, self.steps, self.step_size, self.norm, kl_from(reference))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        x_adv = self.perturb(model, x, 0 if generator is None else generator)
        clean, adv = model(x), model(x_adv)
        smoothness = F.kl_div(adv.log_softmax(1), clean.log_softmax(1), reduction="batchmean", log_target=True)
        return F.cross_entropy(clean, y) + self.beta * smoothness, {"clean": clean, "adv": adv}

    def __repr__(self) -> str:
        return f"TradesLoss(eps={self.eps:g}, beta={self.beta:g}, steps={self.steps}, norm={self.norm!r})"
