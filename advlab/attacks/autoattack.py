"""AutoAttack (Croce & Hein 2020): a fixed ensemble of diverse attacks, run in sequence.

version="standard": APGD-CE, APGD-T (targeted DLR, 9 target classes), FAB-T (9 target
classes), Square (5000 queries). Each attack only sees the images that every attack
before it failed to fool, and each image keeps the first adversarial point found, so
the result is the per-image worst case over the ensemble.

version="rand", for defenses with randomness: APGD-CE and APGD-DLR on the expectation
of the model over `eot_samples` forward passes (Expectation over Transformation).
"""

import torch
from torch import nn

from advlab.attacks._core import check_eps, check_images, check_norm, eval_mode
from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.fab import fab_targeted
from advlab.attacks.square import square

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
               version: str = "standard", seed: int = 0, return_stages: bool = False, steps: int = 100,
               queries: int = 5000):
    """The per-image worst case of the AutoAttack ensemble at radius eps.

    steps (per gradient attack) and queries (Square) are AutoAttack's standard budget;
    lower them only for quick checks, and do not call the result AutoAttack accuracy.

    Returns the adversarial images (x where no attack succeeded or where x is already
    misclassified); with return_stages=True also a list naming, per image, the attack
    that fooled it ("" if none, "clean" if x was already misclassified).
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    check_images(x, y)
    x = x.detach()
    x_adv = x.clone()
    with eval_mode(model), torch.no_grad():
        robust = model(x).argmax(1) == y
    broken_by = ["" if r else "clean" for r in robust.tolist()]
    if eps > 0:
        for name, attack in autoattack_stages(norm, version, seed, steps, queries):
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            candidate = attack(model, x[idx], y[idx], eps)
            with eval_mode(model), torch.no_grad():
                fooled = model(candidate).argmax(1) != y[idx]
            x_adv[idx[fooled]] = candidate[fooled]
            robust[idx[fooled]] = False
            for i in idx[fooled].tolist():
                broken_by[i] = name
    return (x_adv, broken_by) if return_stages else x_adv
