"""AutoAttack (Croce & Hein 2020): a fixed ensemble of diverse attacks, run in sequence.

version="standard": APGD-CE, APGD-T (targeted DLR, 9 target classes), FAB-T (9 target
classes; both: every other class when the model has fewer than 10), Square (5000 queries). Each attack only sees the images that every attack
before it failed to fool, and each image keeps the first adversarial point found, so
the result is the per-image worst case over the ensemble.

version="rand", for defenses with randomness: APGD-CE and APGD-DLR on the expectation
of the model over `eot_samples` forward passes (Expectation over Transformation).
"""

import torch
from torch import nn

from advlab.attacks._core import (
    check_eps,
    check_images,
    check_int,
    check_n_target_classes,
    check_norm,
    check_steps,
    eval_mode,
    make_generator,
)
from advlab.attacks.apgd import _apgd, _apgd_targeted, _RunConfig, apgd, apgd_targeted, prepare_model
from advlab.attacks.fab import _fab_targeted, fab_targeted
from advlab.attacks.losses import cross_entropy, dlr
from advlab.attacks.square import _square, square

VERSIONS = ("standard", "rand")


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


def autoattack_stages(norm: str, version: str, seed: int, steps: int = 100, queries: int = 5000,
                      eot_samples: int = 20):
    """(name, attack(model, x, y, eps)) in the order AutoAttack runs them."""
    if version == "standard":
        return [
            ("apgd-ce", lambda m, x, y, e: apgd(m, x, y, e, norm=norm, steps=steps, loss="ce", seed=seed)),
            ("apgd-t", lambda m, x, y, e: apgd_targeted(m, x, y, e, norm=norm, steps=steps, n_target_classes=9,
                                                        seed=seed)),
            ("fab-t", lambda m, x, y, e: fab_targeted(m, x, y, norm=norm, steps=steps, eps=e, n_target_classes=9,
                                                      seed=seed)),
            ("square", lambda m, x, y, e: square(m, x, y, e, norm=norm, queries=queries, seed=seed)),
        ]
    return [
        ("apgd-ce", lambda m, x, y, e: apgd(ExpectationModel(m, eot_samples), x, y, e, norm=norm, steps=steps,
                                            loss="ce", seed=seed)),
        ("apgd-dlr", lambda m, x, y, e: apgd(ExpectationModel(m, eot_samples), x, y, e, norm=norm, steps=steps,
                                             loss="dlr", seed=seed)),
    ]


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
               version: str = "standard", seed: int | torch.Generator = 0, return_stages: bool = False,
               steps: int = 100, queries: int = 5000, bf16: bool = False):
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
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    check_images(x, y)
    steps, queries = check_steps(steps), check_int(queries, "queries", 1)
    if x.shape[0] == 0:
        x = x.detach()
        return (x.clone(), []) if return_stages else x.clone()
    if version == "standard":
        stages = _standard_stages(norm, seed, steps, queries, eps)
    else:
        stages = _rand_stages(model, norm, seed, steps, eps, bool(bf16))
    return run_ensemble(model, x, y, eps, stages, return_stages=return_stages, bf16=bool(bf16),
                        randomised=version == "rand")


def run_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, stages, return_stages=False,
                 bf16: bool = False, randomised: bool = False):
    """The per-image worst case over `stages` ((name, stage) as _standard_stages returns them), each on the
    images still robust, sharing one clean forward pass: autoattack's loop, also run by fast mode's escalation
    on part of the ensemble. randomised: a fresh forward pass of every point decides (the rand version)."""
    x = x.detach()
    x_adv = x.clone()
    with eval_mode(model):
        fast, clean = prepare_model(model, x, bf16=bf16)
        robust = clean.argmax(1) == y
        broken_by = ["" if r else "clean" for r in robust.tolist()]
        if eps == 0:
            return (x_adv, broken_by) if return_stages else x_adv
        for name, stage in stages:
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            candidate, claimed = stage(fast, x[idx], y[idx], clean[idx])
            with torch.no_grad():
                if not randomised:
                    # confirm only what the stage reports fooled: the others are returned as x anyway
                    sel = claimed.nonzero().squeeze(1)
                    fooled = torch.zeros_like(claimed)
                    if len(sel):
                        fooled[sel] = fast(candidate[sel]).argmax(1) != y[idx[sel]]
                else:  # a randomised model: one fresh forward pass decides, as the stage's EOT mean does not
                    fooled = fast(candidate).argmax(1) != y[idx]
            x_adv[idx[fooled]] = candidate[fooled]
            robust[idx[fooled]] = False
            for i in idx[fooled].tolist():
                broken_by[i] = name
    return (x_adv, broken_by) if return_stages else x_adv


def _standard_stages(norm: str, seed, steps: int, queries: int, eps: float, first_target: int = 1):
    """(name, stage(fast_model, x, y, clean_outputs) -> (points, fooled)) of the standard version:
    the same attacks and settings as `autoattack_stages`, sharing the clean outputs. first_target > 1:
    APGD-T skips the targets ranked before it (fast mode's escalation, where they were attacked)."""

    def apgd_ce(fast, x, y, clean):
        run = _RunConfig(eps, norm, steps, cross_entropy, rho=0.75, momentum=0.75, success_is_target=False,
                         generator=make_generator(seed, x.device))
        return _apgd(fast, x, y, None, clean, 1, run)

    def apgd_t(fast, x, y, clean):
        n_targets = check_n_target_classes(min(9, clean.shape[1] - 1), clean.shape[1])  # 9, or every other class
        run = _RunConfig(eps, norm, steps, dlr, rho=0.75, momentum=0.75, success_is_target=False,
                         generator=make_generator(seed, x.device))
        return _apgd_targeted(fast, x, y, clean, n_targets, 1, run, first_target=first_target)

    def fab_t(fast, x, y, clean):
        n_targets = check_n_target_classes(min(9, clean.shape[1] - 1), clean.shape[1])
        return _fab_targeted(fast, x, y, clean, norm, steps, eps, n_targets, 0, make_generator(seed, x.device),
                             stop_within_eps=True)

    def square_stage(fast, x, y, clean):
        return _square(fast, x, y, clean, eps, norm, queries, 0.8, None, make_generator(seed, x.device))

    return [("apgd-ce", apgd_ce), ("apgd-t", apgd_t), ("fab-t", fab_t), ("square", square_stage)]


def _rand_stages(model: nn.Module, norm: str, seed, steps: int, eps: float, bf16: bool, eot_samples: int = 20):
    """The rand version's stages: APGD-CE and APGD-DLR on the EOT mean of the model."""

    def stage(loss_fn):
        def run_stage(fast, x, y, clean):
            eot, eot_clean = prepare_model(ExpectationModel(model, eot_samples), x, bf16=bf16)
            run = _RunConfig(eps, norm, steps, loss_fn, rho=0.75, momentum=0.75, success_is_target=False,
                             generator=make_generator(seed, x.device))
            return _apgd(eot, x, y, None, eot_clean, 1, run)
        return run_stage

    return [("apgd-ce", stage(cross_entropy)), ("apgd-dlr", stage(dlr))]
