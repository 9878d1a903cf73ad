"""Attacks by name, as the evaluation config names them.

Every entry is called as attack(model, x, y, eps) -> adversarial x, and those that
can aim at a class also take target=. The settings come from conf/evaluation/*.yaml.
"""

from collections.abc import Callable

from advlab.attacks.adaptive import adaptive_pgd, naive
from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.autoattack import autoattack
from advlab.attacks.fab import fab, fab_targeted, minimal_norms
from advlab.attacks.fgsm import fgsm
from advlab.attacks.pgd import pgd
from advlab.attacks.square import square

Attack = Callable[..., object]

# Attacks that accept target= (the others choose their own targets or are untargeted only).
TARGETABLE = {"fgsm", "pgd", "apgd-ce", "square", "fab", "pgd-naive", "pgd-adaptive"}
NAMES = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack", "pgd-naive",
         "pgd-adaptive")


class MinimumNormAttack:
    """FAB, callable like any attack at one eps, and able to give every image's smallest
    adversarial perturbation, so that a whole accuracy-vs-eps curve costs one run."""

    def __init__(self, norm: str, steps: int, seed: int):
        self.norm, self.steps, self.seed = norm, steps, seed

    def __call__(self, model, x, y, eps, target=None):
        return fab(model, x, y, norm=self.norm, steps=self.steps, eps=eps, target=target, seed=self.seed)

    def minimal_norms(self, model, x, y):
        return minimal_norms(model, x, y, norm=self.norm, steps=self.steps, seed=self.seed)


def build_attack(name: str, norm: str = "linf", seed: int = 0, pgd_steps: int = 30,
                 pgd_step_size: float | None = None, pgd_random_start: bool = False, pgd_restarts: int = 1,
                 pgd_loss: str = "ce", apgd_steps: int = 100, apgd_restarts: int = 1, fab_steps: int = 100,
                 square_queries: int = 5000, autoattack_version: str = "standard", eot_samples: int = 10) -> Attack:
    def pgd_attack(m, x, y, e, target=None):
        return pgd(m, x, y, e, steps=pgd_steps, step_size=pgd_step_size, random_start=pgd_random_start,
                   target=target, norm=norm, loss=pgd_loss, restarts=pgd_restarts)

    builders = {
        "fgsm": lambda: lambda m, x, y, e, target=None: fgsm(m, x, y, e, target=target, norm=norm),
        "pgd": lambda: pgd_attack,
        # Purification defenses: PGD on the classifier alone (the naive evaluation), and PGD through the
        # purifier with EOT over its randomness and BPDA over its non-differentiable steps (the adaptive one).
        "pgd-naive": lambda: naive(pgd_attack),
        "pgd-adaptive": lambda: lambda m, x, y, e, target=None: adaptive_pgd(
            m, x, y, e, steps=pgd_steps, step_size=pgd_step_size, eot_samples=eot_samples, norm=norm,
            loss=pgd_loss, restarts=pgd_restarts, target=target),
        "apgd-ce": lambda: lambda m, x, y, e, target=None: apgd(
            m, x, y, e, norm=norm, steps=apgd_steps, loss="ce", target=target, restarts=apgd_restarts, seed=seed),
        "apgd-dlr": lambda: lambda m, x, y, e: apgd(
            m, x, y, e, norm=norm, steps=apgd_steps, loss="dlr", restarts=apgd_restarts, seed=seed),
        "apgd-t": lambda: lambda m, x, y, e: apgd_targeted(
            m, x, y, e, norm=norm, steps=apgd_steps, restarts=apgd_restarts, seed=seed),
        "fab": lambda: MinimumNormAttack(norm, fab_steps, seed),
        "fab-t": lambda: lambda m, x, y, e: fab_targeted(m, x, y, norm=norm, steps=fab_steps, eps=e, seed=seed),
        "square": lambda: lambda m, x, y, e, target=None: square(
            m, x, y, e, norm=norm, queries=square_queries, target=target, seed=seed),
        "autoattack": lambda: lambda m, x, y, e: autoattack(m, x, y, e, norm=norm, version=autoattack_version,
                                                            seed=seed),
    }
    if name not in builders:
        raise ValueError(f"evaluation.attacks: unknown attack {name!r}; allowed: {', '.join(NAMES)}")
    return builders[name]()


def build_attacks(names, **settings) -> dict[str, Attack]:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"evaluation.attacks: unknown attack(s) {unknown}; allowed: {', '.join(NAMES)}")
    return {name: build_attack(name, **settings) for name in names}
