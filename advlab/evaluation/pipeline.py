"""The one evaluation pipeline: the command line, the seed study, the sweep and advlab.evaluate
all call `run_evaluation` here, so the same model, data and settings give the same numbers everywhere.

    clean accuracy and confusion matrix -> robust accuracy per attack and eps, the worst case,
    targeted success -> certified accuracy (models with a Lipschitz bound, L2) -> the checks

`run_evaluation` is the pipeline on a settings object (advlab.evaluation.settings); advlab.evaluate,
the public entry, builds the settings from keyword arguments and calls it.

No step reads or reseeds the global random state: random attacks draw from generators seeded
with `settings.seed`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import SPECS, build_attacks
from advlab.data import to_unit_float
from advlab.defenses.lipschitz import certified_accuracy
from advlab.evaluation import convergence
from advlab.evaluation.checks import check_eps_for_sample, run_checks
from advlab.evaluation.distributed import rank_and_world_size
from advlab.evaluation.robustness import evaluate_robustness, infer_num_classes
from advlab.evaluation.settings import EvaluationSettings
from advlab.results import Certified, Results


def run_evaluation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: EvaluationSettings,
             num_classes: int | None = None) -> Results:
    """Results of `model` (in eval mode, on its device) on images (float in [0, 1], or uint8) and labels.

    Under torch.distributed every rank passes the whole set; each evaluates its shard, every rank
    gets the whole set's counts, and rank 0 alone runs the certified bound and the checks.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length, got {images.shape[0]} and {labels.shape[0]}")
    attacks = build_attacks(settings.attacks, norm=settings.norm, seed=settings.seed)
    device = next(iter(model.parameters()), torch.empty(0)).device
    if num_classes is None:
        num_classes = infer_num_classes(model, images)
    eps = sorted({float(e) for e in settings.eps})
    # Its own generator: a DataLoader otherwise draws a base seed from the global stream on every pass.
    loader = DataLoader(TensorDataset(images, labels), batch_size=settings.batch_size, generator=torch.Generator())
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(settings.bf16)):
        results = evaluate_robustness(model, loader, eps, attacks, settings.target, num_classes=num_classes,
                                      per_attack=settings.per_attack, norm=settings.norm,
                                      progress=settings.progress, perturbed=settings.perturbed)
    if rank_and_world_size()[0] != 0:
        return results
    if hasattr(model, "lipschitz_constant") and settings.norm == "l2":  # a provable bound: certified accuracy too
        x, y = to_unit_float(images.to(device)), labels.to(device)
        results.certified = Certified(float(model.lipschitz_constant), eps, [
            certified_accuracy(model, x, y, e, batch_size=settings.batch_size) for e in eps])
    if settings.checks and attacks:
        _checks(model, images, labels, results, attacks, settings, num_classes)
        warned = [c.name for c in results.checks if c.status == "WARN" and c.name in MASKING_CHECKS]
        fallback = _without_fast_mode(settings.attacks)
        if warned and fallback != list(settings.attacks):
            results = run_evaluation(model, images, labels, replace(settings, attacks=fallback), num_classes)
            results.notes.append(f"{FAST}: the gradient-masking checks warned ({', '.join(warned)}), so the full "
                                 "AutoAttack judged this model instead of fast mode")
    return results


FAST = "autoattack-fast"
# Fast mode trusts the gradients it is given more than AutoAttack does (fewer targets, a short Square):
# when one of these checks says the gradients mislead, the full ensemble judges the model instead.
# (convergence is about the evaluation's PGD budget, label_leaking about FGSM training; fast mode's
# step-size-adaptive APGD and its Square stage do not depend on either.)
MASKING_CHECKS = ("monotone", "large_eps", "iterative", "black_box")


def _without_fast_mode(entries: Sequence) -> list:
    """The attack entries with fast mode replaced by the standard AutoAttack (its steps kept)."""
    out = []
    for entry in entries:
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, Mapping) else None
        if name != FAST:
            out.append(entry)
            continue
        full = {"name": "autoattack"}
        if isinstance(entry, Mapping):
            full.update({k: entry[k] for k in ("steps", "label") if k in entry})
            if "full_queries" in entry:
                full["queries"] = entry["full_queries"]
        out.append(full)
    return out


def _checks(model, images, labels, results: Results, attacks: dict, settings: EvaluationSettings,
            num_classes: int) -> None:
    """The convergence trace (PGD, APGD) and the checks, on the first checks_n_images test images."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    n = settings.checks_n_images
    x, y = to_unit_float(images[:n].to(device)), labels[:n].to(device)
    pgd = attacks.get("pgd")
    pgd_steps = pgd.setting("steps") if hasattr(pgd, "setting") else SPECS["pgd"].settings["steps"]
    eps = check_eps_for_sample(results)  # where the worst case is about half the clean accuracy
    if settings.convergence and eps is not None:
        with torch.no_grad():
            correct = (model(x).argmax(1) == y).nonzero().squeeze(1)[:settings.convergence_n_images]
        if len(correct):
            results.convergence = convergence.trace(model, x[correct], y[correct], eps, settings.norm,
                                                    pgd_steps=pgd_steps, seed=settings.seed)
    results.checks = run_checks(
        model, results, x, y, trace=results.convergence,
        iterative=[name for name, a in attacks.items() if getattr(a, "iterative", True)], norm=settings.norm,
        large_eps=settings.checks_large_eps.get(settings.norm), pgd_steps=pgd_steps,
        square_queries=settings.checks_square_queries, seed=settings.seed, num_classes=num_classes)
