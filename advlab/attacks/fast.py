"""Fast AutoAttack: an adaptive ensemble with AutoAttack's strength at a fraction of its cost.

Standard AutoAttack (advlab.attacks.autoattack) spends most of its time on images no attack
will fool: each robust image goes through APGD-CE, APGD-T toward 9 target classes, FAB-T
toward 9 and 5000 Square queries, although where gradients are honest the first APGD-T
targets already find nearly every point the ensemble finds. Fast mode runs the cheap, strong
part on every image and keeps the rest of AutoAttack for the images, or the models, where
the cheap part gives a reason to distrust it.

0. Flat-gradient check (one backward pass): an image whose margin has an exactly zero input
   gradient at x (rounding, thresholds: "shattered" gradients) cannot be moved by a gradient
   attack, so it skips stages 1-2 and goes to Square directly.
1. APGD-CE (`steps`) on every other correctly classified image; fooled images leave the batch
   at once, so on weak models this stage is nearly the whole cost.
2. APGD-T (targeted DLR) toward only the top `n_target_classes` classes by clean output: the
   nearest classes in logit space are where the boundary usually is, and DLR's ratio form is
   what defeats rescaled or saturated logits (where cross-entropy's gradient vanishes).
   With an int seed both APGD stages draw the same random starts as AutoAttack's, so on the
   images they share they find the same points.
3. Square, short (`queries`): the gradient-masking guard. It never uses a gradient, so where
   it fools what the gradient stages missed, those gradients were not telling the truth.
4. Escalation, the safety net:
   - Model level: if Square fooled more than `masking_share` of the images it attacked, the
     model is treated as gradient-masked. On such a model AutoAttack's gradient stages are no
     better than their random starts and its strength is Square's, so every image still robust
     gets AutoAttack's Square at its full budget (`full_queries`, a fresh random stream), on
     top of the short run; masked_escalation="autoattack" runs the whole standard AutoAttack
     on them instead (as strong, more costly).
   - Image level, otherwise: an image still robust goes on to the rest of standard AutoAttack
     when its gradient was flat (stages 1-2 never saw it: the whole ensemble), when Square came
     much closer to the boundary than the gradient stages (its margin below `disagreement` times
     theirs: the stages disagree; APGD-T's skipped targets, FAB-T and Square at its full budget),
     or when its lowest margin over all stages came within `boundary` of the decision boundary
     (margin / clean margin <= boundary, logit differences, so the ratio ignores the logits'
     scale): a near miss, which the skipped APGD-T targets and FAB-T get to push over. Square's
     full budget is not spent on near misses of a model Square found honest: on a batch of one
     it is half of AutoAttack's time for no image on the zoo (bench/evaluation.py).
     What already ran (APGD-CE, the first n_target_classes targets) is not run again.
   An image Square fooled needs no escalation itself (it is already adversarial); what that
   disagreement says is about the model, hence the model-level rule.

Each stage sees only the images every earlier stage failed to fool, and each image keeps the
first adversarial point found, so the result is a per-image worst case, as in AutoAttack,
and its robust accuracy an upper bound like any attack's. bench/evaluation.py measures how
close it stays to standard AutoAttack's, and at what share of its time, on a zoo of defenses.
Randomised models (a sampled purifier) need AutoAttack's version="rand" (EOT): this ensemble
of deterministic attacks does not replace it.
"""

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.attacks._core import (check_classes_of, check_eps, check_images, check_int, check_norm,
                                 check_number, eval_mode, forward, make_generator)
from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.autoattack import QUERIES, STEPS, VERSIONS, run_ensemble, stages
from advlab.attacks.losses import margin
from advlab.attacks.square import square

MASKED_ESCALATIONS = ("square", "autoattack")


@dataclass
class FastStages:
    """What fast_autoattack did, returned with return_stages=True.

    broken_by: per image, the stage whose point fooled the model: "clean" (misclassified at x),
        "apgd-ce", "apgd-t", "square", "square-full" (masked model), "autoattack:<its stage>"
        for an image escalated to AutoAttack, or "" where nothing did.
    escalated: per image, why it was escalated: "masked", "flat", "disagree", "boundary", or ""
        (not escalated).
    masked: whether the model was judged gradient-masked.
    seconds: wall time per stage ("autoattack" or "square-full" for the escalation).
    margin_ratio: per stage, per image, the logit margin (true class minus the best other) at the
        stage's point over the clean margin: 1 = not moved, <= 0 = fooled; nan where it did not run.
    """

    broken_by: list[str]
    escalated: list[str]
    masked: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    margin_ratio: dict[str, torch.Tensor] = field(default_factory=dict)


def fast_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    seed: int | torch.Generator = 0,
    steps: int = STEPS,
    n_target_classes: int = 3,
    queries: int = 500,
    masking_share: float = 0.05,
    masked_escalation: str = "square",
    boundary: float = 0.05,
    disagreement: float = 0.5,
    full_queries: int = QUERIES,
    escalate: bool = True,
    return_stages: bool = False,
):
    """Adversarial images of the fast ensemble (see the module docstring) at radius eps.

    steps: iterations of every APGD (and FAB) run, escalation included; n_target_classes:
    APGD-T's targets (top classes by clean output); queries: the short Square's budget;
    masking_share: the share of the images Square attacks that it may fool before the model is
    treated as gradient-masked; masked_escalation: what the remaining images of a masked model
    get, "square" (Square with full_queries) or "autoattack" (the full standard AutoAttack);
    boundary: the margin ratio (best point / clean) at or below which a robust image is
    escalated; disagreement: escalate when Square's margin ratio is below this times the
    gradient stages'; full_queries: Square's budget in the escalation (AutoAttack's 5000);
    escalate=False stops after stage 3 (cheaper, weaker). seed: an int (each stage starts its
    own generator from it, as AutoAttack does) or a Generator the stages draw from in turn;
    the global random state is untouched.

    Returns the images (inside the eps-ball and [0, 1]; x itself where nothing was found, or
    where x is already misclassified); with return_stages=True, (images, FastStages).
    """
    eps, norm = check_eps(eps), check_norm(norm)
    steps, queries, full_queries = (check_int(v, k, 1) for k, v in
                                    (("steps", steps), ("queries", queries), ("full_queries", full_queries)))
    masking_share, boundary, disagreement = (check_number(v, k, 0, 1) for k, v in (
        ("masking_share", masking_share), ("boundary", boundary), ("disagreement", disagreement)))
    if masked_escalation not in MASKED_ESCALATIONS:
        raise ValueError(f"masked_escalation must be one of {MASKED_ESCALATIONS}, got {masked_escalation!r}")
    check_images(x, y)
    make_generator(seed, x.device)  # refuses a bad seed up front, whatever the images
    run = _Run(model, x.detach(), y)
    if x.shape[0] == 0:
        return run.result(return_stages)
    with eval_mode(model):
        # 0. the clean outputs, the images to attack, the flat-gradient check
        clean = forward(model, run.x)
        check_classes_of(clean, y)
        n_target_classes = check_int(n_target_classes, "n_target_classes", 1)
        if n_target_classes > clean.shape[1] - 1:
            raise ValueError(f"n_target_classes must be at most {clean.shape[1] - 1} (the classes other than the "
                             f"true one), got {n_target_classes}")
        run.start(clean)
        if eps == 0 or not run.robust.any():
            return run.result(return_stages)
        flat = torch.zeros_like(run.robust)
        flat[run.robust] = _flat_gradient(model, run.x[run.robust], y[run.robust])

        # 1-3. the cheap, strong part on every image: APGD-CE, APGD-T toward the top classes, a short Square
        run.stage("apgd-ce", lambda xs, ys: apgd(model, xs, ys, eps, norm=norm, steps=steps, loss="ce", seed=seed),
                  run.robust & ~flat)
        run.stage("apgd-t", lambda xs, ys: apgd_targeted(model, xs, ys, eps, norm=norm, steps=steps,
                                                         n_target_classes=n_target_classes, seed=seed),
                  run.robust & ~flat)
        attacked, by_square = run.stage("square", lambda xs, ys: square(model, xs, ys, eps, norm=norm,
                                                                        queries=queries, seed=seed), run.robust)
        if not escalate or not run.robust.any():
            return run.result(return_stages)

        # 4. escalation: the model, or the images, that the cheap part gives a reason to distrust
        run.stages.masked = len(by_square) > masking_share * len(attacked)
        reason = escalation_reasons(run.stages, run.robust, flat, boundary, disagreement)
        run.stages.escalated = reason
        send = torch.tensor([bool(r) for r in reason], device=run.robust.device)
        if run.stages.masked and masked_escalation == "square":
            # a fresh stream: with an int seed the short run's would start from the same stripes
            long_seed = seed + 1 if isinstance(seed, int) else seed
            run.stage("square-full", lambda xs, ys: square(model, xs, ys, eps, norm=norm, queries=full_queries,
                                                           seed=long_seed), send)
        elif send.any():
            start = time.perf_counter()
            for group, names, first_target in escalation_groups(reason, n_target_classes):
                chosen = stages(norm, seed, eps, steps, full_queries, names=names, first_target=first_target)
                run.escalate(torch.tensor(group, device=run.x.device), eps, chosen)
            run.stages.seconds["autoattack"] = time.perf_counter() - start
    return run.result(return_stages)


class _Run:
    """What fast_autoattack has found so far: the adversarial images, which images are still robust, and
    the record of the stages (FastStages). Each stage attacks a subset and `record`s what fooled."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y, self.x_adv = model, x, y, x.clone()
        self.robust = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        self.stages = FastStages(broken_by=[], escalated=[""] * len(y))
        self.clean_margin = None

    def start(self, clean: torch.Tensor) -> None:
        """The images to attack: those the model classifies correctly at x."""
        self.robust = clean.argmax(1) == self.y
        self.stages.broken_by = ["" if r else "clean" for r in self.robust.tolist()]
        self.clean_margin = -margin(clean, self.y)  # > 0 on the images still to attack

    def stage(self, name: str, attack, on: torch.Tensor):
        """Attack the images in mask `on` with attack(x, y); returns (attacked, fooled) index tensors.
        Records each image's margin ratio at the stage's point (1: not moved, <= 0: fooled)."""
        idx = on.nonzero().squeeze(1)
        if idx.numel() == 0:
            return idx, idx
        start = time.perf_counter()
        candidate = attack(self.x[idx], self.y[idx])
        out = forward(self.model, candidate)
        fooled = out.argmax(1) != self.y[idx]
        ratio = torch.full_like(self.clean_margin, torch.nan)
        ratio[idx] = -margin(out, self.y[idx]) / self.clean_margin[idx].clamp_min(1e-12)
        self.stages.margin_ratio[name] = ratio
        self.record(idx[fooled], candidate[fooled], [name] * int(fooled.sum()))
        self.stages.seconds[name] = self.stages.seconds.get(name, 0.0) + time.perf_counter() - start
        return idx, idx[fooled]

    def escalate(self, idx: torch.Tensor, eps: float, chosen) -> None:
        """AutoAttack's `chosen` stages (advlab.attacks.autoattack.stages) on the images idx."""
        candidate, names = run_ensemble(self.model, self.x[idx], self.y[idx], eps, chosen, return_stages=True)
        hit = [j for j, name in enumerate(names) if name]  # never "clean": these are classified correctly at x
        self.record(idx[hit], candidate[hit], [f"autoattack:{names[j]}" for j in hit])

    def record(self, idx: torch.Tensor, points: torch.Tensor, names: list[str]) -> None:
        self.x_adv[idx] = points
        self.robust[idx] = False
        for i, name in zip(idx.tolist(), names):
            self.stages.broken_by[i] = name

    def result(self, return_stages: bool):
        return (self.x_adv, self.stages) if return_stages else self.x_adv


def escalation_reasons(stages: FastStages, robust: torch.Tensor, flat: torch.Tensor, boundary: float,
                       disagreement: float) -> list[str]:
    """Why each image still robust goes on (the module docstring's rules), "" for the others. On a masked
    model every one of them; otherwise near misses ("boundary"), disagreements between Square and the
    gradient stages ("disagree") and flat gradients ("flat"), later reasons winning."""
    reason = [""] * len(robust)
    if stages.masked:
        for i in robust.nonzero().squeeze(1).tolist():
            reason[i] = "masked"
        return reason
    nan = torch.full(robust.shape, torch.nan, device=robust.device)
    gradient = torch.fmin(stages.margin_ratio.get("apgd-ce", nan), stages.margin_ratio.get("apgd-t", nan))
    black_box = stages.margin_ratio["square"]
    lowest = torch.fmin(gradient, black_box)
    for why, mask in (("boundary", lowest <= boundary), ("disagree", black_box < disagreement * gradient.clamp_min(0)),
                      ("flat", flat)):
        for i in (robust & mask).nonzero().squeeze(1).tolist():
            reason[i] = why  # later reasons win: flat, then disagree, then boundary
    return reason


def escalation_groups(reason: list[str], n_target_classes: int):
    """(image indices, AutoAttack stages to run, APGD-T's first target) per group of escalated images.

    flat: the gradient stages never saw these images: the whole ensemble. disagree: Square came closer
    than the gradient stages: the APGD-T targets fast mode skipped, FAB-T and Square at its full budget.
    boundary (a near miss of the gradient stages on a model Square found honest): the skipped APGD-T
    targets and FAB-T, the attacks that push a near miss over; Square at 5000 queries, most of
    AutoAttack's time on a few images, is left to the disagreement and masking rules.
    APGD-CE and the first n_target_classes APGD-T targets already ran on the images sent here (except
    flat ones), with the same budget.
    """
    everything = VERSIONS["standard"]
    plans = {"masked": (everything, 1),  # masked_escalation="autoattack"
             "flat": (everything, 1),
             "disagree": (("apgd-t", "fab-t", "square"), n_target_classes + 1),
             "boundary": (("apgd-t", "fab-t"), n_target_classes + 1)}
    for why, (names, first_target) in plans.items():
        group = [i for i, r in enumerate(reason) if r == why]
        if group:
            yield group, names, first_target


def _flat_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, whether the input gradient of its margin at x is exactly zero (no parameter grads)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        objective = margin(model(x), y).sum()
        grad = None
        if objective.requires_grad:  # else no differentiable path from the input to the output
            (grad,) = torch.autograd.grad(objective, x, allow_unused=True)
    if grad is None:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return grad.flatten(1).abs().amax(1) == 0
