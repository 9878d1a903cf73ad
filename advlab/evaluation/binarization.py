"""The binarization test (Zimmermann, Brendel, Tramèr & Carlini, NeurIPS 2022, "Increasing Confidence in
Adversarial Robustness Evaluations"): do the configured attacks find adversarial examples known to exist?

    python -m advlab +experiment=binarization checkpoint=RUN/model.pt eps=0.01 evaluation.attacks=[pgd]

For each test image x the model becomes a binary classifier whose only new part is a linear readout on
the model's own features (the input of its last linear layer). The readout is fitted to put x and
`n_inner` random points of the eps-ball around x (inner points, within `inner_radius` eps) in class 0 and
one point x_b on the ball's boundary (a random vertex of the L-inf ball, a random point of the L2 sphere;
clipped to [0, 1]) in class 1. x_b lies in the eps-ball and is classified 1: an adversarial example is known
to exist for every image. The configured attacks then attack the binary classifier at eps (label 0), image
by image, and the test reports the share of images where some attack found a point of class 1. Images whose
readout does not separate its own training points are left out (the test says how many).

Reading it: the share is the attack configuration's success on problems it must solve. Near 100% (PASS,
at or above `threshold`) says the attacks reach points this close to the boundary through this model's
features, so their robust accuracy on it is not inflated by weakness there; well below says the attacks
are too weak for this model (masked or obfuscated gradients, too few steps, a step size too small): its
robust accuracy cannot be trusted, whatever it is. In the paper, 11 of 13 published defenses' original
evaluations failed it. It tests the attacks, not the model: a PASS does not make the model robust.

The binary classifier's output has 10 logits: the readout's two and 8 constant offsets below both, so
attacks on the DLR loss (APGD-T, AutoAttack), which need 3 classes or more, run unchanged and the only
class an attack can reach is 1.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks._core import check_eps, check_norm, eval_mode, random_start
from advlab.data import to_unit_float

PAD = 8  # logits added below the readout's two, for attacks that need 3 or more classes


class _Features:
    """The input of the model's last nn.Linear on each forward pass (the model's features)."""

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("binarization: the model has no nn.Linear layer whose input could serve as its features")
        self.value = None
        self.handle = linears[-1].register_forward_hook(lambda module, args, out: setattr(self, "value", args[0]))

    def remove(self) -> None:
        self.handle.remove()


class Binarized(nn.Module):
    """model's features -> the readout's 2 logits, then PAD constant logits below both."""

    def __init__(self, model: nn.Module, features: _Features, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.model, self.features = model, features
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x):
        self.model(x)
        logits = self.features.value.flatten(1) @ self.weight.t() + self.bias
        low = logits.min(1, keepdim=True).values - 1 - torch.arange(PAD, device=x.device, dtype=logits.dtype)
        return torch.cat([logits, low], 1)


@dataclass
class BinarizationResult:
    eps: float
    norm: str
    n_images: int  # images tested (correctly classified, readout separable)
    skipped: int  # images left out: the readout did not separate its training points
    found: dict[str, int] = field(default_factory=dict)  # attack -> images where it found a point of class 1
    found_any: int = 0  # images where some attack did
    threshold: float = 0.95

    @property
    def share(self) -> float:
        return self.found_any / self.n_images if self.n_images else math.nan

    @property
    def passed(self) -> bool:
        return self.n_images > 0 and self.share >= self.threshold

    def to_dict(self) -> dict:
        return {"eps": self.eps, "norm": self.norm, "n_images": self.n_images, "skipped": self.skipped,
                "found": self.found, "found_any": self.found_any, "share": self.share,
                "threshold": self.threshold, "status": "PASS" if self.passed else "FAIL"}

    def summary(self) -> str:
        per = ", ".join(f"{a} {100 * k / max(self.n_images, 1):.1f}%" for a, k in self.found.items())
        return (f"binarization test at eps={self.eps:g} ({self.norm}): the attacks found the known adversarial "
                f"example on {self.found_any} of {self.n_images} images ({100 * self.share:.1f}%; {per}); "
                f"{self.skipped} left out; {'PASS' if self.passed else 'FAIL'} (threshold {100 * self.threshold:g}%)")


def _fit_readout(features: torch.Tensor, labels: torch.Tensor, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear readout (weight (2, d), bias (2,)) separating features by their 0/1 labels: logistic regression
    with the classes weighted equally, on standardised features (folded back into the weights)."""
    mean, scale = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / scale
    weight = torch.zeros(2, z.shape[1], requires_grad=True)
    bias = torch.zeros(2, requires_grad=True)
    counts = torch.bincount(labels, minlength=2).float()
    class_weight = counts.sum() / (2 * counts.clamp_min(1))
    optimizer = torch.optim.Adam([weight, bias], lr=0.1)
    for _ in range(steps):
        loss = F.cross_entropy(z @ weight.t() + bias, labels, weight=class_weight) + 1e-4 * weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight, bias = weight.detach() / scale, bias.detach() - (weight.detach() / scale) @ mean
    return weight, bias


def _boundary_point(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A random point of the eps-ball's boundary around x (an L-inf vertex, an L2 sphere point), in [0, 1]."""
    if norm == "linf":
        signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        return (x + eps * signs).clamp(0, 1)
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + eps * direction / direction.flatten().norm()).clamp(0, 1)


def binarization_test(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attacks: dict, eps: float,
                      norm: str = "linf", n_images: int = 100, n_inner: int = 99, inner_radius: float = 0.5,
                      threshold: float = 0.95, seed: int = 0) -> BinarizationResult:
    """The test on the first n_images correctly classified images (see the module docstring).

    attacks: {name: attack} as advlab.attacks.registry.build_attacks makes them; each is called as
    attack(binary_model, x, y, eps). Returns the counts; the model's mode is put back."""
    eps, norm = check_eps(eps), check_norm(norm)
    if eps <= 0:
        raise ValueError(f"binarization.eps must be > 0, got {eps}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    generator = torch.Generator(device=device).manual_seed(seed)
    result = BinarizationResult(eps, norm, 0, 0, {name: 0 for name in attacks}, 0, threshold)
    features = _Features(model)
    try:
        with eval_mode(model):
            for i in range(len(labels)):
                if result.n_images >= n_images:
                    break
                x, y = to_unit_float(images[i:i + 1].to(device)), labels[i:i + 1].to(device)
                with torch.no_grad():
                    if model(x).argmax(1) != y:
                        continue
                    inner = random_start(x.expand(n_inner, *x.shape[1:]), inner_radius * eps, norm, generator)
                    points = torch.cat([x, inner, _boundary_point(x, eps, norm, generator)])
                    model(points)
                    phi = features.value.flatten(1).float().cpu()
                target = torch.zeros(len(points), dtype=torch.long)
                target[-1] = 1
                weight, bias = _fit_readout(phi, target)
                if not ((phi @ weight.t() + bias).argmax(1) == target).all():
                    result.skipped += 1
                    continue
                binary = Binarized(model, features, weight.to(device), bias.to(device)).eval()
                result.n_images += 1
                any_found = False
                for name, attack in attacks.items():
                    x_adv = attack(binary, x, torch.zeros_like(y), eps)
                    with torch.no_grad():
                        hit = bool(binary(x_adv).argmax(1) == 1)
                    result.found[name] += hit
                    any_found |= hit
                result.found_any += any_found
    finally:
        features.remove()
    return result
