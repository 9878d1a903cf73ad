"""Evaluate any nn.Module from Python, with the same attacks and checks as the CLI.

    import advlab
    results = advlab.evaluate(model, x_test, y_test, eps=[8/255], attacks=["autoattack"],
                              normalization=((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)))

`normalization` declares what the model expects: given (mean, std), advlab puts the
normalisation in front of the model, so attacks still work on [0, 1] images and eps
keeps its pixel meaning. Use None for models that normalise inside (RobustBench models do).
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation.checks import run_checks
from advlab.evaluation.robustness import evaluate_robustness
from advlab.models.normalize import Normalize


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: Sequence[float],
             attacks: Sequence[str] = ("fgsm", "pgd", "autoattack"), norm: str = "linf",
             normalization: tuple[Sequence[float], Sequence[float]] | None = None, batch_size: int = 500,
             per_attack: bool = True, checks: bool = True, checks_n_images: int = 200, seed: int = 0,
             num_classes: int | None = None, **attack_settings) -> dict:
    """Robust accuracy with 95% intervals per attack and eps, the per-image worst case, and the checks.

    images: (N, C, H, W) in [0, 1] (float) or uint8; labels: (N,) class indices.
    attack_settings: as build_attacks takes them (pgd_steps=..., square_queries=...).
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length, got {images.shape[0]} and {labels.shape[0]}")
    if normalization is not None:
        mean, std = normalization
        model = nn.Sequential(Normalize(mean, std), model)
    device = next(iter(model.parameters()), torch.empty(0)).device
    model = model.to(device)
    if num_classes is None:
        with torch.no_grad():
            num_classes = model(_float(images[:1]).to(device)).shape[1]
    built = build_attacks(list(attacks), norm=norm, seed=seed, **attack_settings)
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size)
    torch.manual_seed(seed)
    results = evaluate_robustness(model, loader, eps, built, num_classes=num_classes, per_attack=per_attack,
                                  norm=norm)
    if checks and built:
        x, y = _float(images[:checks_n_images]).to(device), labels[:checks_n_images].to(device)
        results["checks"] = run_checks(model, results, x, y, norm=norm, seed=seed, num_classes=num_classes,
                                       pgd_steps=attack_settings.get("pgd_steps", 30))
    return results


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x
