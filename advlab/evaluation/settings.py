"""What an evaluation measures, and its defaults: the one place the default attack list is written.

The Python API (advlab.evaluate), the config (conf/evaluation/default.yaml reads DEFAULT_ATTACKS through
the ${advlab:default_attacks} resolver, advlab/resolvers.py) and the settings object all take it from here.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

# FGSM and PGD (the seed study's attacks, and the single-step / iterative pair the checks compare) and
# AutoAttack-strength fast mode, whose worst case with them is the robust accuracy (docs/autoattack.md).
DEFAULT_ATTACKS = ("fgsm", "pgd", "autoattack-fast")


@dataclass
class EvaluationSettings:
    """What to measure. `attacks` are config entries (advlab.attacks.registry.build_attack)."""

    eps: Sequence[float]
    attacks: Sequence = DEFAULT_ATTACKS
    norm: str = "linf"
    target: int | None = None  # also measure targeted success toward this class
    per_attack: bool = True  # each attack's own curve (False: AutoAttack-style sequence, same worst case)
    perturbed: bool = True  # L-inf: accuracy with FGSM on every image (the label-leaking measure)
    bf16: bool = False  # attacks under bf16 autocast; images and steps stay float32
    checks: bool = True
    checks_n_images: int = 200
    checks_square_queries: int = 1000
    checks_large_eps: dict = field(default_factory=dict)  # per norm; missing: checks.LARGE_EPS
    convergence: bool = True  # trace PGD and APGD per iteration on the checks' images (figure, check)
    convergence_n_images: int = 64
    seed: int = 0
    batch_size: int = 500
    progress: bool | None = None
    save_adversarial: bool = False  # keep each image's worst-case adversarial point per eps (results.adversarial)
    transfer_from: str | None = None  # a run folder's saved adversarial examples, or a surrogate checkpoint to attack
    merge: str | None = None  # a finished run (folder or results.json): run only the new attacks on its survivors
    resume: bool = True  # keep finished batches on disk; the same evaluation started again continues from them
    cache_dir: str | None = None  # where (advlab.evaluation.resume); None: ADVLAB_CACHE, else ~/.cache/advlab
    source: str = "this run"  # names, in the per-image record, the run that produced the new columns
