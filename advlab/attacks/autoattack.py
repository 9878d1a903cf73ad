"""AutoAttack (Croce & Hein 2020): a fixed ensemble of diverse attacks, run in sequence.

Each attack only sees the images that every attack before it failed to fool, and each image keeps
the first adversarial point found, so the result is the per-image worst case over the ensemble.
Its versions, stages and budgets are written once, in VERSIONS and the constants below it (the
reference keeps them in one set_version()); `autoattack` and fast mode's escalation
(advlab.attacks.fast) both build their stages from them (`stages`).

version="standard": APGD-CE, APGD-T (targeted DLR, 9 target classes), FAB-T (9 target
classes; both: every other class when the model has fewer than 10), Square (5000 queries).

version="rand", for defenses with randomness: APGD-CE and APGD-DLR on the expectation
of the model over `eot_samples` forward passes (Expectation over Transformation).
"""

import torch
from torch import nn

from advlab.attacks._core import (check_eps, check_images, check_int, check_n_target_classes, check_norm,
                                 check_steps, eval_mode, forward, make_generator, prepare_model)
from advlab.attacks.apgd import MOMENTUM, N_TARGET_CLASSES, RHO, RunConfig, run_apgd, run_apgd_targeted
from advlab.attacks.fab import Search, run_fab_targeted
from advlab.attacks.losses import cross_entropy, dlr
from advlab.attacks.square import P_INIT, run_square

# The versions: their stages, in the order they run.
VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
# The budgets: iterations of each gradient attack (APGD, FAB), Square's queries and the rand version's EOT
# samples. APGD's step-size rule and momentum (apgd.RHO, apgd.MOMENTUM), the target classes of APGD-T and
# FAB-T (apgd.N_TARGET_CLASSES: 9, or every other class when the model has fewer than 10) and Square's first
# window (square.P_INIT) are those attacks' own defaults, which AutoAttack uses too.
STEPS, QUERIES, EOT_SAMPLES = 100, 5000, 20


def n_targets(num_classes: int, wanted: int = N_TARGET_CLASSES) -> int:
    """The target classes of APGD-T and FAB-T: `wanted`, or every other class when there are fewer."""
    return check_n_target_classes(min(wanted, num_classes - 1), num_classes)


class ExpectationModel(nn.Module):
    """Mean log-probabilities over several forward passes of a randomised model.

    Cross-entropy is linear in the log-probabilities, so its gradient through this
    mean is exactly the mean of the per-pass gradients: EOT without a special loop.
    """

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        self.model, self.samples = model, samples
        # A new Module starts in train mode; the attacks' mode guard would then put the wrapped model in it.
        self.train(model.training)

    def forward(self, x):
        return torch.stack([self.model(x).log_softmax(1) for _ in range(self.samples)]).mean(0)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
               version: str = "standard", seed: int | torch.Generator = 0, return_stages: bool = False,
               steps: int = STEPS, queries: int = QUERIES, bf16: bool = False):
    """The per-image worst case of the AutoAttack ensemble at radius eps.

    steps (per gradient attack) and queries (Square) are AutoAttack's standard budget;
    lower them only for quick checks, and do not call the result AutoAttack accuracy.
    seed: an int (each stage starts its own generator from it) or a torch.Generator that the
    stages draw from in turn (advlab.attacks._core.make_generator).
    bf16: run the model's forward passes under bfloat16 autocast (images, gradients and
    projections stay float32); faster on devices with bf16 units, and the robust accuracy can
    differ from float32's by the images whose decision is that close.

    Returns the adversarial images (x where no attack succeeded or where x is already
    misclassified); with return_stages=True also a list naming, per image, the attack
    that fooled it ("" if none, "clean" if x was already misclassified).

    The clean forward pass is made once and shared by every stage; each stage works only on
    the images still robust and drops an image from its working batch as soon as it is
    fooled. A stage's successes are confirmed by a forward pass of those images alone before
    they are counted, so every image reported fooled is misclassified at the returned point.
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {tuple(VERSIONS)}, got {version!r}")
    check_images(x, y)
    steps, queries = check_steps(steps), check_int(queries, "queries", 1)
    if x.shape[0] == 0:
        x = x.detach()
        return (x.clone(), []) if return_stages else x.clone()
    if version == "standard":
        chosen = stages(norm, seed, eps, steps, queries)
    else:
        chosen = rand_stages(model, norm, seed, eps, steps, bool(bf16))
    return run_ensemble(model, x, y, eps, chosen, return_stages=return_stages, bf16=bool(bf16),
                        randomised=version == "rand")


def run_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, chosen, return_stages=False,
                 bf16: bool = False, randomised: bool = False):
    """The per-image worst case over the `chosen` stages ((name, stage) as `stages` returns them), each on
    the images still robust, sharing one clean forward pass: autoattack's loop, also run by fast mode's
    escalation on part of the ensemble. randomised: a fresh forward pass of every point decides (the rand
    version)."""
    x = x.detach()
    x_adv = x.clone()
    with eval_mode(model):
        attacked, clean = prepare_model(model, x, bf16=bf16)
        robust = clean.argmax(1) == y
        broken_by = ["" if r else "clean" for r in robust.tolist()]
        if eps == 0:
            return (x_adv, broken_by) if return_stages else x_adv
        for name, stage in chosen:
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            candidate, claimed = stage(attacked, x[idx], y[idx], clean[idx])
            if not randomised:
                # confirm only what the stage reports fooled: the others are returned as x anyway
                sel = claimed.nonzero().squeeze(1)
                fooled = torch.zeros_like(claimed)
                if len(sel):
                    fooled[sel] = forward(attacked, candidate[sel]).argmax(1) != y[idx[sel]]
            else:  # a randomised model: one fresh forward pass decides, as the stage's EOT mean does not
                fooled = forward(attacked, candidate).argmax(1) != y[idx]
            x_adv[idx[fooled]] = candidate[fooled]
            robust[idx[fooled]] = False
            for i in idx[fooled].tolist():
                broken_by[i] = name
    return (x_adv, broken_by) if return_stages else x_adv


def stages(norm: str, seed, eps: float, steps: int = STEPS, queries: int = QUERIES,
           names=VERSIONS["standard"], first_target: int = 1):
    """(name, stage(attacked_model, x, y, clean_outputs) -> (points, fooled)) of the standard version, in
    its order, for the stages in `names`. first_target > 1: APGD-T skips the targets ranked before it
    (fast mode's escalation, where they were attacked already). Each stage starts its own generator
    from an int seed, as the reference does."""

    def apgd_ce(attacked, x, y, clean):
        run = RunConfig(eps, norm, steps, cross_entropy, RHO, MOMENTUM, success_is_target=False,
                        generator=make_generator(seed, x.device))
        return run_apgd(attacked, x, y, None, clean, 1, run)

    def apgd_t(attacked, x, y, clean):
        run = RunConfig(eps, norm, steps, dlr, RHO, MOMENTUM, success_is_target=False,
                        generator=make_generator(seed, x.device))
        return run_apgd_targeted(attacked, x, y, clean, n_targets(clean.shape[1]), 1, run, first_target=first_target)

    def fab_t(attacked, x, y, clean):
        search = Search(norm, steps, eps, 0, make_generator(seed, x.device), clean.shape[1], stop_within_eps=True)
        return run_fab_targeted(attacked, x, y, clean, n_targets(clean.shape[1]), search)

    def square_stage(attacked, x, y, clean):
        return run_square(attacked, x, y, clean, eps, norm, queries, P_INIT, None, make_generator(seed, x.device))

    every = {"apgd-ce": apgd_ce, "apgd-t": apgd_t, "fab-t": fab_t, "square": square_stage}
    unknown = set(names) - set(every)
    if unknown:
        raise ValueError(f"AutoAttack's standard stages are {VERSIONS['standard']}, got {sorted(unknown)}")
    return [(name, every[name]) for name in VERSIONS["standard"] if name in names]


def rand_stages(model: nn.Module, norm: str, seed, eps: float, steps: int = STEPS, bf16: bool = False,
                eot_samples: int = EOT_SAMPLES):
    """The rand version's stages: APGD-CE and APGD-DLR on the EOT mean of the model."""

    def stage(loss_fn):
        def run_stage(attacked, x, y, clean):
            eot, eot_clean = prepare_model(ExpectationModel(model, eot_samples), x, bf16=bf16)
            run = RunConfig(eps, norm, steps, loss_fn, RHO, MOMENTUM, success_is_target=False,
                            generator=make_generator(seed, x.device))
            return run_apgd(eot, x, y, None, eot_clean, 1, run)
        return run_stage

    return list(zip(VERSIONS["rand"], (stage(cross_entropy), stage(dlr))))
