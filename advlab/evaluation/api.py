"""Evaluate any nn.Module from Python: the same pipeline, attacks and checks as the command line.

    import advlab
    results = advlab.evaluate(model, x_test, y_test, eps=[8/255], attacks=["pgd", "apgd-t"],
                              normalization=((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)))
    results.worst_case(8/255)

`normalization` declares what the model expects: given (mean, std), advlab puts the
normalisation in front of the model, so attacks still work on [0, 1] images and eps
keeps its pixel meaning. Use None for models that normalise inside (RobustBench models do).
"""

from collections.abc import Sequence

import torch
from torch import nn

from advlab.evaluation.pipeline import EvaluationSettings
from advlab.evaluation.pipeline import evaluate as run_pipeline
from advlab.models.normalize import Normalize
from advlab.results import Results


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: Sequence[float],
             attacks: Sequence = ("fgsm", "pgd", "autoattack"),
             normalization: tuple[Sequence[float], Sequence[float]] | None = None, num_classes: int | None = None,
             **settings) -> Results:
    """Robust accuracy with 95% intervals per attack and eps, the per-image worst case, and the checks.

    images: (N, C, H, W) in [0, 1] (float) or uint8; labels: (N,) class indices.
    attacks: names or entries with settings, e.g. ["fgsm", {"name": "pgd", "steps": 100}].
    settings: any field of advlab.evaluation.pipeline.EvaluationSettings (norm="l2", seed=1,
    target=4, per_attack=False, checks=False, checks_n_images=..., bf16=True, batch_size=...),
    with the defaults written there. The model is evaluated in eval mode on its own device; its
    mode is put back afterwards.
    """
    settings = EvaluationSettings(eps=eps, attacks=list(attacks), **settings)
    was_training = model.training
    evaluated = model
    if normalization is not None:
        mean, std = normalization
        device = next(iter(model.parameters()), torch.empty(0)).device
        evaluated = nn.Sequential(Normalize(mean, std).to(device), model)
    try:
        return run_pipeline(evaluated.eval(), images, labels, settings, num_classes=num_classes)
    finally:
        model.train(was_training)
