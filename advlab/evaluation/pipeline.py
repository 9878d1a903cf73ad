"""The one evaluation pipeline: the command line, the seed study, the sweep and advlab.evaluate
all call `run_evaluation` here, so the same model, data and settings give the same numbers everywhere.

    the per-image record: clean predictions and margins, survival and margin per attack and eps, the worst
    case (a finished run's, extended by the new attacks, with evaluation.merge) -> the transfer attack
    (evaluation.transfer_from) -> certified accuracy (models with a Lipschitz bound, L2) -> the checks ->
    where a gradient-masking check warns, the full AutoAttack on the images the others left robust

Every number of the Results is an aggregate of the record. Finished batches are kept on disk until the
evaluation ends (advlab.evaluation.resume), so a killed evaluation started again continues.
`run_evaluation` is the pipeline on a settings object (advlab.evaluation.settings); advlab.evaluate,
the public entry, builds the settings from keyword arguments and calls it.

No step reads or reseeds the global random state: random attacks draw from generators seeded
with `settings.seed`.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab import __version__
from advlab.attacks.registry import SPECS, build_attacks
from advlab.checkpoint import load
from advlab.data import to_unit_float
from advlab.defenses.lipschitz import certified_accuracy
from advlab.evaluation import convergence
from advlab.evaluation.checks import check_eps_for_sample, run_checks
from advlab.evaluation.distributed import rank_and_world_size
from advlab.evaluation.merge import load_base
from advlab.evaluation.resume import BatchStore, data_sha256, weights_sha256
from advlab.evaluation.robustness import evaluate_robustness, extend_robustness, infer_num_classes, results_from
from advlab.evaluation.settings import EvaluationSettings
from advlab.evaluation.transfer import add_transfer, check_transfer, saved_examples
from advlab.results import Certified, Results


def run_evaluation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: EvaluationSettings,
                   num_classes: int | None = None) -> Results:
    """Results of `model` (in eval mode, on its device) on images (float in [0, 1], or uint8) and labels.

    Under torch.distributed every rank passes the whole set; each evaluates its shard, every rank
    gets the whole set's record, and rank 0 alone runs the transfer attack, the certified bound, the
    checks and the fallback.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length, got {images.shape[0]} and {labels.shape[0]}")
    attacks = build_attacks(settings.attacks, norm=settings.norm, seed=settings.seed)
    device = next(iter(model.parameters()), torch.empty(0)).device
    if num_classes is None:
        num_classes = infer_num_classes(model, images)
    eps = sorted({float(e) for e in settings.eps})
    fingerprint = {"model": weights_sha256(model), "data": data_sha256(images, labels)}
    stores = _stores(settings, fingerprint)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(settings.bf16)):
        if settings.merge:
            results = _merged(model, images, labels, settings, attacks, eps, fingerprint, num_classes, stores)
        else:
            # Its own generator: a DataLoader otherwise draws a base seed from the global stream on every pass.
            loader = DataLoader(TensorDataset(images, labels), batch_size=settings.batch_size,
                                generator=torch.Generator())
            results = evaluate_robustness(model, loader, eps, attacks, settings.target, num_classes=num_classes,
                                          per_attack=settings.per_attack, norm=settings.norm,
                                          progress=settings.progress, perturbed=settings.perturbed,
                                          keep_adversarial=settings.save_adversarial, store=stores["main"])
    record = results.per_image
    record.fingerprint = fingerprint
    for name in record.attacks:
        record.sources.setdefault(name, settings.source)
    if rank_and_world_size()[0] != 0:
        return results
    if settings.transfer_from:
        examples = _surrogate_examples(settings, images, labels, eps)
        add_transfer(record, model, labels, examples, str(settings.transfer_from), settings.batch_size)
        results = _recount(results, num_classes)
    if hasattr(model, "lipschitz_constant") and settings.norm == "l2":  # a provable bound: certified accuracy too
        x, y = to_unit_float(images.to(device)), labels.to(device)
        results.certified = Certified(float(model.lipschitz_constant), eps, [
            certified_accuracy(model, x, y, e, batch_size=settings.batch_size) for e in eps])
    if settings.checks and attacks:
        _checks(model, images, labels, results, attacks, settings, num_classes)
        if settings.transfer_from:
            results.checks.append(check_transfer(record))
        warned = [c.name for c in results.checks if c.status == "WARN" and c.name in MASKING_CHECKS]
        fallback = _full_autoattack(settings.attacks, record.attacks)
        if warned and fallback:
            start, robust = time.perf_counter(), int(record.worst(eps[-1]).sum()) if eps else 0
            results = _fallback(model, images, labels, results, fallback, settings, num_classes, stores)
            results.notes.append(f"{FAST}: the gradient-masking checks warned ({', '.join(warned)}), so the full "
                                 "AutoAttack also judged this model, on the images the other attacks left robust "
                                 f"({robust} at eps={eps[-1]:g}; {time.perf_counter() - start:.1f} s)")
    for store in stores.values():
        if store is not None:
            store.clear()
    return results


def _surrogate_examples(settings: EvaluationSettings, images, labels, eps: list[float]) -> dict:
    """The transfer attack's images per eps: a run folder's saved ones, or those of this evaluation's attacks on
    the model of a checkpoint (the surrogate)."""
    source = Path(settings.transfer_from)
    if source.is_dir():
        return saved_examples(source, labels, eps)
    surrogate = load(source).eval()
    quiet = replace(settings, eps=eps, checks=False, perturbed=False, save_adversarial=True, transfer_from=None,
                    merge=None, target=None, resume=False)
    return run_evaluation(surrogate, images, labels, quiet).adversarial


def _stores(settings: EvaluationSettings, fingerprint: dict) -> dict:
    """The batch stores of the stages that can be resumed (advlab.evaluation.resume), or None each."""
    if not settings.resume:
        return {"main": None, "fallback": None}
    key = {**fingerprint, "advlab": __version__, "settings": {
        k: v for k, v in asdict(settings).items() if k not in ("progress", "resume", "cache_dir", "source")}}
    return {stage: BatchStore.for_evaluation(key, stage, settings.cache_dir) for stage in ("main", "fallback")}


def _recount(results: Results, num_classes: int) -> Results:
    """The numbers of `results` computed again from its (extended) record; what else it holds, kept."""
    fresh = results_from(results.per_image, num_classes)
    for keep in ("adversarial", "certified", "checks", "convergence", "notes", "provenance"):
        setattr(fresh, keep, getattr(results, keep))
    return fresh


def _merged(model, images, labels, settings, attacks, eps, fingerprint, num_classes, stores) -> Results:
    """evaluation.merge: the finished run's record, with the attacks it did not run on its survivors."""
    base = load_base(settings.merge, fingerprint["model"], fingerprint["data"], eps, settings.norm)
    before = list(base.per_image.attacks)
    record = extend_robustness(model, images, labels, base.per_image, attacks, settings.source, settings.batch_size,
                               settings.progress, store=stores["main"])
    results = results_from(record, num_classes)
    results.provenance = {"merged_from": {"run": str(settings.merge), "provenance": base.provenance,
                                          "attacks": before}}
    added = [a for a in record.attacks if a not in before]
    results.notes.append(f"merged into {settings.merge}: {', '.join(added) or 'no new attack'} ran on the images it "
                         "left robust")
    return results


def _fallback(model, images, labels, results: Results, entries: list, settings, num_classes, stores) -> Results:
    """The full AutoAttack, only on the images every other attack left robust; the record's worst case then
    includes it (nothing else is run again)."""
    attacks = build_attacks(entries, norm=settings.norm, seed=settings.seed)
    extend_robustness(model, images, labels, results.per_image, attacks, settings.source, settings.batch_size,
                      settings.progress, adversarial=results.adversarial, store=stores["fallback"])
    return _recount(results, num_classes)


FAST = "autoattack-fast"
# Fast mode trusts the gradients it is given more than AutoAttack does (fewer targets, a short Square):
# when one of these checks says the gradients mislead, the full ensemble judges the model instead.
# (convergence is about the evaluation's PGD budget, label_leaking about FGSM training; fast mode's
# step-size-adaptive APGD and its Square stage do not depend on either.)
MASKING_CHECKS = ("monotone", "large_eps", "iterative", "black_box")


def _full_autoattack(entries: Sequence, ran: list[str]) -> list:
    """The standard AutoAttack entry that stands in for fast mode's (its steps and budget kept), when fast mode
    is among the attacks and the full AutoAttack is not; else []."""
    for entry in entries:
        name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, Mapping) else None
        if name != FAST or "autoattack" in ran:
            continue
        full = {"name": "autoattack"}
        if isinstance(entry, Mapping):
            full.update({k: entry[k] for k in ("steps",) if k in entry})
            if "full_queries" in entry:
                full["queries"] = entry["full_queries"]
        return [full]
    return []


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
