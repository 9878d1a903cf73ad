"""How Lipschitz is a model, measured: power iteration on each image's Jacobian.

Works for any nn.Module. The numbers are lower bounds (a model is at least this
sensitive), which complement the upper bound a certifiable model declares: for a
LipschitzCNN the estimate must stay below its `lipschitz_constant`, and for an
ordinary CNN it shows how far from certifiable the model is.
"""

from collections.abc import Callable
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from advlab.attacks._core import check_int, eval_mode


class LipschitzEstimate(NamedTuple):
    per_image: torch.Tensor  # (N,): the spectral norm of the Jacobian at each image (power-iteration estimate)
    max: float               # the largest of them: a lower bound of the global L2 Lipschitz constant


def _per_image_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _power_iteration(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """sigma_max(J_i) per image i of the batch, by power iteration on J_i^T J_i.

    Assumes fn treats the images of a batch independently (so its Jacobian is block
    diagonal); every vector below is normalised per image. J v comes from the
    "double-backward" trick: g(u) = J^T u (a vector-Jacobian product, built with
    create_graph) is linear in u, and the gradient of <g(u), v> with respect to u is J v.
    Only reverse mode is needed, which every module supports. torch.autograd.grad with
    explicit inputs writes no .grad anywhere.
    """
    x = x.detach().requires_grad_(True)
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    v = v / _per_image_norm(v).clamp_min(1e-30)
    with torch.enable_grad():
        out = fn(x)
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, x, grad_outputs=u, create_graph=True)
        for _ in range(iters):
            (jv,) = torch.autograd.grad(jt_u, u, grad_outputs=v, retain_graph=True)
            (jt_jv,) = torch.autograd.grad(out, x, grad_outputs=jv, retain_graph=True)
            v = jt_jv / _per_image_norm(jt_jv).clamp_min(1e-30)  # a zero Jacobian leaves v = 0, sigma = 0
        (jv,) = torch.autograd.grad(jt_u, u, grad_outputs=v)
    # ||J v|| for a unit v never exceeds sigma_max: the estimate approaches it from below.
    return jv.detach().flatten(1).norm(dim=1)


def _check_x(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a non-empty floating-point batch (N, ...) of inputs, got {shape}")


def lipschitz_estimate(model: nn.Module, x: torch.Tensor, iters: int = 20, seed: int = 0) -> LipschitzEstimate:
    """Each image's local L2 sensitivity ||J(x_i)||_2 (Jacobian of the model's output
    with respect to its input), and the largest over the batch.

    This is an estimate from below, for two reasons: power iteration approaches the
    largest singular value from below (after any number of iterations ||J v|| <= sigma_max
    for a unit v), and the global Lipschitz constant is the supremum of ||J(x)|| over all
    inputs (for a model differentiable almost everywhere, as ReLU/MaxMin nets are), of
    which these images are a few. So `max` <= the global L2 Lipschitz constant of any
    nn.Module; it proves a model is *not* certifiable at a smaller constant, never that it
    is. A declared bound (a LipschitzCNN's `lipschitz_constant`) must be >= `max`.

    Runs in eval mode (then restores the caller's mode) so that batch-norm uses its
    running statistics and images stay independent; leaves no .grad on the parameters.
    `seed` fixes the random starting vectors.
    """
    _check_x(x)
    iters = check_int(iters, "iters", 1)
    generator = torch.Generator().manual_seed(int(seed))
    with eval_mode(model):
        per_image = _power_iteration(model, x, iters, generator)
    return LipschitzEstimate(per_image, float(per_image.max()))


def layer_spectral_norm(layer: nn.Module | torch.Tensor, input_shape: tuple[int, ...], iters: int = 50,
                        seed: int = 0) -> float:
    """Spectral norm of a linear (or affine: the bias does not count) layer acting on inputs of
    `input_shape` (one input, no batch dimension), by power iteration: a lower bound that
    converges to the norm. `layer` is a module (a conv with its padding and stride, an AOL
    layer, ...) or a 2-D weight matrix W (acting as x -> W x).

    For a conv layer the operator depends on the image size and padding, which is why the
    shape is needed; a 4-D kernel alone is ambiguous and refused.
    """
    if torch.is_tensor(layer):
        if layer.dim() != 2:
            raise ValueError(f"layer must be an nn.Module or a 2-D weight matrix, got a tensor of shape "
                             f"{tuple(layer.shape)} (pass a conv as its module, which knows its padding)")
        weight = layer.detach()
        fn = lambda z: z @ weight.t()  # noqa: E731 - a one-line linear map
    elif isinstance(layer, nn.Module):
        fn = layer
    else:
        raise ValueError(f"layer must be an nn.Module or a 2-D weight matrix, got {type(layer).__name__}")
    if not input_shape or any(isinstance(s, bool) or int(s) != s or s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive integers (one input, no batch dimension), got {input_shape!r}")
    iters = check_int(iters, "iters", 1)
    like = layer if torch.is_tensor(layer) else next(iter(layer.parameters()), torch.empty(0))
    x = torch.zeros(1, *map(int, input_shape), dtype=like.dtype, device=like.device)
    generator = torch.Generator().manual_seed(int(seed))
    with eval_mode(layer) if isinstance(layer, nn.Module) else nullcontext():
        return float(_power_iteration(fn, x, iters, generator)[0])
