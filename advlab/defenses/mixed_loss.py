"""The seed study's adversarial-training loss, generalised to several perturbations:

    l'(x, y) = alpha * l(x, y) + (1 - alpha) * sum_i w_i * l(p_i(x), y),   sum_i w_i = 1

alpha = 1 is clean training, alpha = 0 trains on perturbed images only (the study's
choice). With one perturbation this is the study's formula; with several (say FGSM
and PGD) it is the study's proposed l' = a0 l(x) + a1 l(p1(x)) + ... + an l(pn(x)),
with a0 = alpha swept by Hydra and the rest shared by the relative weights w.
Only terms with non-zero weight are computed, so alpha = 0 costs no clean forward pass.
`label_smoothing` s trains every term toward (1 - s) on the label plus s / K on every class (torch's
definition; Szegedy et al. 2016); the perturbations themselves are found with the plain loss.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.perturbation import NoPerturbation, Perturbation


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight of the clean loss) must be in [0, 1], got {alpha}")
    return alpha


def _relative_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"loss.weights must hold one weight per perturbation ({n}), got {len(weights)}")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"loss.weights must be finite numbers >= 0 with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


class MixedLoss:
    """Called as loss(model, x, y, generator=None) -> (loss, outputs); outputs maps each computed term's
    name ("clean", "adv", or "adv<i>_<perturbation>" when there are several) to the model output."""

    def __init__(self, alpha: float = 1.0, perturbations: Sequence[Perturbation] = (),
                 weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        self.alpha = check_alpha(alpha)
        self.label_smoothing = float(label_smoothing)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        weights = _relative_weights(weights, len(perturbations)) if perturbations else []
        kept = [(p, w) for p, w in zip(perturbations, weights) if not isinstance(p, NoPerturbation)]
        total = sum(w for _, w in kept)
        if kept and total == 0:
            raise ValueError("loss.weights must give the perturbations (other than `none`) a positive sum")
        # Without any perturbation the clean loss is the whole loss, whatever alpha says.
        clean_weight = self.alpha if kept else 1.0
        names = ["adv"] if len(kept) == 1 else [f"adv{i}_{p.name}" for i, (p, _) in enumerate(kept)]
        terms = [("clean", clean_weight, None)]
        terms += [(name, (1 - clean_weight) * w / total, p) for name, (p, w) in zip(names, kept)]
        self.terms = [term for term in terms if term[1] > 0]  # terms without weight are never computed

    @property
    def adversarial(self) -> bool:
        return any(p is not None for _, _, p in self.terms)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        # Perturb first, so every attack sees the model as it was at the start of the step.
        inputs = {name: x if p is None else p(model, x, y, generator=generator) for name, _, p in self.terms}
        loss, outputs = x.new_zeros(()), {}
        for name, weight, _ in self.terms:
            outputs[name] = model(inputs[name])
            loss = loss + weight * F.cross_entropy(outputs[name], y, label_smoothing=self.label_smoothing)
        return loss, outputs

    def __repr__(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing:g}" if self.label_smoothing else ""
        return "MixedLoss(" + ", ".join(f"{w:g} * {name}: {p!r}" for name, w, p in self.terms) + smoothing + ")"
