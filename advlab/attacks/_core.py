"""What the attacks share, written once: argument checks, the mode guard, the model as the attacks call
it (channels-last, bf16), the forward pass and the input gradient, the success test, per-image
broadcasting, norms, projections and random starts.

Kept apart from the attacks themselves so that each attack file reads as its update rule; an attack
file imports from here and from no other attack's private names.
"""

import math
from contextlib import contextmanager

import torch
from torch import nn

from advlab.attacks.losses import cross_entropy


def check_eps(eps: float, name: str = "eps") -> float:
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (pixel units, images in [0, 1]), got {eps}")
    return eps


def check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_number(value, name: str, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, what: str = "", meaning: str = "") -> float:
    """A finite float in the interval from low to high (open at either end when asked); nan is refused.
    The error reads "{name} must be {what} in {interval} {meaning}, got {value}", e.g. "beta must be a number
    in (0, 1], got 0.0"; with high = inf, "eta must be a finite number >= 1 (the overshoot factor), got 0.9"."""
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):  # every comparison with nan is False
        if high == math.inf:
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        words = " ".join(part for part in (what, interval, meaning) if part)
        raise ValueError(f"{name} must be {words}, got {value}")
    return value


def check_steps(steps: int) -> int:
    return check_int(steps, "steps", 1)


def check_n_target_classes(n: int, num_classes: int) -> int:
    if isinstance(n, bool) or int(n) != n or not 1 <= n <= num_classes - 1:
        raise ValueError(f"n_target_classes must be an integer in [1, {num_classes - 1}] "
                         f"(classes other than the true one; the model has {num_classes}), got {n!r}")
    return int(n)


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


def check_target(y: torch.Tensor, target) -> torch.Tensor | None:
    """Target class per image as a tensor like y (an int means the same class for all), or None."""
    if target is None:
        return None
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
    return target.to(y.device)


def check_classes(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes - 1}], "
            f"got values in [{labels.min().item()}, {labels.max().item()}]"
        )


def check_classes_of(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> None:
    """The labels (and targets) against the model's output width: the first forward pass of an attack."""
    check_classes(y, out.shape[1], "y")
    if target is not None:
        check_classes(target, out.shape[1], "target")


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


NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


# ----------------------------------------------------------------------------- the model as the attacks call it


class AttackedModel:
    """The model as the attacks call it (the caller has put it in eval mode): on the CPU, 4-D
    images go in channels-last (the convolution and pooling backward passes run about twice as
    fast on them, with the same outputs up to float rounding); with bf16, the forward pass runs
    under bfloat16 autocast and the outputs come back as float32 (images, gradients and
    projections stay float32)."""

    def __init__(self, model, channels_last: bool = False, bf16: bool = False):
        self.model, self.channels_last, self.bf16 = model, channels_last, bf16

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """x in the memory format the model is fed (the same values)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.bf16:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


def prepare_model(model, x: torch.Tensor, bf16: bool = False):
    """(AttackedModel, the model's output at x without gradient). Channels-last is used on the CPU
    for 4-D images unless the model rejects such input (e.g. a `view` of the flattened image),
    which this first forward pass finds out."""
    if isinstance(model, AttackedModel):
        return model, forward(model, x)
    if x.dim() == 4 and x.device.type == "cpu" and x.shape[0] > 0:
        attacked = AttackedModel(model, channels_last=True, bf16=bf16)
        try:
            return attacked, forward(attacked, x)
        except RuntimeError:
            pass
    attacked = AttackedModel(model, bf16=bf16)
    return attacked, forward(attacked, x)


@torch.no_grad()
def forward(model, x: torch.Tensor) -> torch.Tensor:
    """The model's output at x, without building a graph."""
    return model(x)


def fooled(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Success per image: the target class wins (targeted), or any class but y wins (untargeted)."""
    pred = out.argmax(1)
    return pred == target if target is not None else pred != y


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=cross_entropy,
                   target: torch.Tensor | None = None, check: bool = False):
    """Gradient of the summed per-image objective with respect to the images only.

    Returns (gradient, model output, per-image objective), the last two detached, so
    attacks that track the best point so far need no extra forward pass.
    torch.autograd.grad with inputs=x never writes .grad on the parameters. The sum
    (not the mean) keeps each image's gradient independent of the batch size.
    `check` validates labels against the model's number of classes (first step only).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if check:
            check_classes(y, out.shape[1], "y")
            if target is not None:
                check_classes(target, out.shape[1], "target")
        loss = loss_fn(out, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad, out.detach(), loss.detach()


# ----------------------------------------------------------------------------- per-image geometry


def per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values (a mask, a radius, a step size) shaped to broadcast over the images of `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _flat_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm, shaped to broadcast against the batch."""
    flat = t.flatten(1)
    return per_image(flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1), t)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """One norm per image, shape (N,)."""
    return _flat_norm(delta, norm).flatten()


def steepest_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-size direction of steepest ascent: sign for L-inf, the normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _flat_norm(grad, "l2").clamp_min(1e-12)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Closest point of the eps-ball around x, then clipped to [0, 1].

    Clipping after the projection stays inside the ball: x is in [0, 1], so clipping
    only moves each coordinate of x_adv toward x's.
    """
    if norm == "linf":
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        x_adv = x + delta * (eps / _flat_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
    return x_adv.clamp(0.0, 1.0)


def make_generator(seed: "int | torch.Generator", device: torch.device) -> torch.Generator:
    """advlab's one random-number policy: every stochastic attack takes `seed`, an int or a
    torch.Generator, and draws only from the generator made here.

    An int seeds a private generator on the attack's device, so the same seed gives the same
    images and the caller's global random state is neither read nor changed. A Generator is
    used as it is: training passes one stream that lives across batches (and is saved with
    the checkpoint), so successive batches get different draws.
    """
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(check_int(seed, "seed", 0))


def random_start(x: torch.Tensor, eps: "float | torch.Tensor", norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniform random point of the eps-ball around x, clipped to [0, 1]. eps: one radius, or one per
    image ((N,): FAB's restarts start within half the best norm found so far, image by image)."""
    radius = per_image(eps, x) if torch.is_tensor(eps) else eps
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
    else:
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _flat_norm(direction, "l2").clamp_min(1e-12)
        d = x[0].numel()
        length = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = direction * per_image(length, x) * radius
    return (x + delta).clamp(0.0, 1.0)  # inside the ball already: clipping only moves pixels toward x
