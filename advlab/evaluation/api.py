"""Evaluate any nn.Module from Python: the same pipeline, attacks and checks as the command line.

    import advlab
    results = advlab.evaluate(model, x_test, y_test, eps=[8/255], attacks=["pgd", "apgd-t"],
                              normalization=((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)))
    results.worst_case(8/255)

`normalization` declares what the model expects: given (mean, std), advlab puts the
normalisation in front of the model, so attacks still work on [0, 1] images and eps
keeps its pixel meaning. Use None for models that normalise inside (RobustBench models do).
A model may return logits, a tuple whose first element is the logits, or a dict with "logits"
(advlab.models.adapter does both, as for the command line's models). The test set may also be
a DataLoader of (images, labels) batches:

    results = advlab.evaluate(model, test_loader, eps=[8/255], attacks=["pgd"])
"""

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from advlab.evaluation.pipeline import run_evaluation
from advlab.evaluation.settings import EvaluationSettings
from advlab.models.adapter import adapt
from advlab.results import Results


def gather(batches: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """All (images, labels) of a DataLoader (or any iterable of batches), concatenated on the CPU.

    A batch is a (images, labels, ...) tuple or list, or a dict with "image(s)" and "label(s)"."""
    xs, ys = [], []
    for batch in batches:
        if isinstance(batch, Mapping):
            x = next((batch[k] for k in ("images", "image", "x", "pixel_values") if k in batch), None)
            y = next((batch[k] for k in ("labels", "label", "y", "targets") if k in batch), None)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            x, y = batch[0], batch[1]
        else:
            x = y = None
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("advlab.evaluate: each batch of the DataLoader must be (images, labels) tensors "
                            f"(or a dict with 'images' and 'labels'), got {type(batch).__name__}")
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu())
    if not xs:
        raise ValueError("advlab.evaluate: the DataLoader gave no batches")
    return torch.cat(xs), torch.cat(ys)


def evaluate(model: nn.Module, images: torch.Tensor | Iterable, labels: torch.Tensor | None = None,
             eps: Sequence[float] | None = None,
             attacks: Sequence | None = None,
             normalization: tuple[Sequence[float], Sequence[float]] | None = None, num_classes: int | None = None,
             **settings) -> Results:
    """Robust accuracy with 95% intervals per attack and eps, the per-image worst case, and the checks.

    images: (N, C, H, W) in [0, 1] (float) or uint8; labels: (N,) class indices. Or images a DataLoader
    (any iterable of (images, labels) batches) and labels None: its batches are gathered in memory.
    eps: the radii (required).
    attacks: names or entries with settings, e.g. ["fgsm", {"name": "pgd", "steps": 100}]; None: the default
    list (advlab.evaluation.settings.DEFAULT_ATTACKS: FGSM, PGD and AutoAttack-strength fast mode).
    settings: any field of advlab.evaluation.settings.EvaluationSettings (norm="l2", seed=1,
    target=4, per_attack=False, checks=False, checks_n_images=..., bf16=True, batch_size=...),
    with the defaults written there. The model is evaluated in eval mode on its own device; its
    mode is put back afterwards.
    """
    if eps is None:
        raise TypeError("advlab.evaluate: give eps, the radii to attack at (e.g. eps=[8/255])")
    if not isinstance(images, torch.Tensor):
        if labels is not None:
            raise TypeError("advlab.evaluate: with a DataLoader, the labels come from its batches: leave labels out")
        images, labels = gather(images)
    elif labels is None:
        raise TypeError("advlab.evaluate: give labels with the images (or a DataLoader of (images, labels))")
    if attacks is not None:
        settings["attacks"] = list(attacks)
    settings = EvaluationSettings(eps=eps, **settings)
    was_training = model.training
    evaluated = adapt(model, normalization)
    try:
        return run_evaluation(evaluated.eval(), images, labels, settings, num_classes=num_classes)
    finally:
        model.train(was_training)
