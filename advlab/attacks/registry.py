"""Every attack advlab knows, one spec each, and the one way to build an attack from config.

A spec is the attack function plus what it supports. Its settings are the function's own keyword
arguments with their defaults, read from the signature: a setting and its default are written
once, in the function, and every route (evaluation, robust validation, training perturbation,
Python) sees the same ones. Adding a setting is one keyword argument; a config sets it by name.

    attack = build_attack("pgd", norm="l2", steps=10)          # or {"name": "pgd", "steps": 10}
    x_adv = attack(model, x, y, eps=0.5)
    build_attack({"_target_": "mymodule.MyAttack", "strength": 2})  # a user's attack, no edit to advlab

An entry in a config is one of: a registered name ("apgd-t"); a mapping with `name` and
settings ({name: pgd, steps: 10}); a mapping with `_target_` (any importable class or function
Hydra can instantiate into an attack object); or an attack object already built. An optional
`label` names the attack in results (two PGDs with different settings need two labels).

An attack object, advlab's or a user's, is called as attack(model, x, y, eps, target=None) and
returns images in [0, 1]. Optional attributes tell what it supports (defaults in brackets):
name, targeted [False], iterative [True], gradients [True], bounded [True: in the eps-ball],
randomised [False: if True it also takes generator=], norms [both], and minimal_norms(model, x, y)
for minimum-norm attacks (one run serves every eps).
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from advlab.attacks._core import NORMS, check_norm
from advlab.attacks.adaptive import adaptive_pgd, naive_pgd
from advlab.attacks.apgd import apgd, apgd_targeted
from advlab.attacks.autoattack import autoattack
from advlab.attacks.fast import fast_autoattack
from advlab.attacks.fab import fab, fab_targeted, minimal_norms
from advlab.attacks.fgsm import fgsm, fgsm_rs, n_fgsm
from advlab.attacks.pgd import pgd
from advlab.attacks.square import square

# Arguments every attack call fills in itself; everything else in a signature is a setting.
_CALL_ARGUMENTS = ("model", "x", "y", "eps", "norm", "target", "seed", "observe")


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its function, the settings its name fixes, and what it supports."""

    name: str
    fn: Callable
    targeted: bool = False  # takes target= (can aim at a chosen class)
    iterative: bool = True  # many steps or queries per image (single-step attacks: False)
    gradients: bool = True  # white-box: follows the model's input gradients
    bounded: bool = True  # returns images inside the eps-ball (N-FGSM's training perturbation does not)
    norms: tuple[str, ...] = NORMS
    fixed: Mapping = field(default_factory=dict)  # settings the name implies ("apgd-dlr": loss="dlr")
    signature_of: Callable | None = None  # where the settings are declared, when fn only forwards them
    minimal_norms: Callable | None = None  # minimal_norms(model, x, y, norm=, **settings): one run, every eps
    summary: str = ""

    @functools.cached_property
    def _parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.signature_of or self.fn).parameters)

    @property
    def randomised(self) -> bool:
        """Draws random numbers (and so takes a seed or generator)."""
        return "seed" in self._parameters

    @property
    def settings(self) -> dict:
        """Setting -> default, from the function's signature."""
        return {k: p.default for k, p in self._parameters.items()
                if k not in _CALL_ARGUMENTS and k not in self.fixed and p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Attack:
    """A spec with its settings bound: attack(model, x, y, eps, target=None, generator=None)."""

    spec: AttackSpec
    norm: str = "linf"
    seed: int = 0
    settings: Mapping = field(default_factory=dict)  # only the ones that differ from the defaults
    label: str | None = None

    def __post_init__(self):
        check_norm(self.norm)
        if self.norm not in self.spec.norms:
            raise ValueError(f"norm: attack {self.spec.name!r} supports {self.spec.norms}, got {self.norm!r}")
        unknown = sorted(set(self.settings) - set(self.spec.settings))
        if unknown:
            raise ValueError(f"{self.spec.name}: unknown setting(s) {unknown}; its settings are "
                             f"{', '.join(f'{k}={v!r}' for k, v in self.spec.settings.items()) or '(none)'}")
        self._dry_run()

    def _dry_run(self) -> None:
        """Call the attack once at eps 0 on one tiny image: the functions check their arguments up front,
        so a bad value (steps=0, rho=2) is refused when the attack is built, not an epoch into training."""
        x = torch.full((1, 1, 2, 2), 0.5)
        try:
            self(_DryModel(), x, torch.zeros(1, dtype=torch.long), 0.0)
        except ValueError as error:
            raise ValueError(f"{error} (attack {self.spec.name!r})") from error

    name = property(lambda self: self.label or self.spec.name)
    targeted = property(lambda self: self.spec.targeted)
    iterative = property(lambda self: self.spec.iterative)
    gradients = property(lambda self: self.spec.gradients)
    bounded = property(lambda self: self.spec.bounded)
    randomised = property(lambda self: self.spec.randomised)
    norms = property(lambda self: self.spec.norms)

    def setting(self, name: str):
        """The value this attack runs with: its own setting, or the spec's default."""
        return {**self.spec.settings, **self.spec.fixed, **self.settings}[name]

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, eps: float, target=None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        kwargs = {**self.spec.fixed, **self.settings, "norm": self.norm}
        if self.randomised:
            kwargs["seed"] = self.seed if generator is None else generator
        if target is not None:
            if not self.targeted:
                raise ValueError(f"target: attack {self.name!r} cannot aim at a class")
            kwargs["target"] = target
        return self.spec.fn(model, x, y, eps=eps, **kwargs)

    def __getattr__(self, item):
        # minimal_norms exists only on minimum-norm attacks, so hasattr(attack, "minimal_norms") tells them apart.
        if item == "minimal_norms" and self.spec.minimal_norms is not None:
            kwargs = {k: v for k, v in {**self.spec.fixed, **self.settings}.items()
                      if k in inspect.signature(self.spec.minimal_norms).parameters}
            return functools.partial(self.spec.minimal_norms, norm=self.norm, seed=self.seed, **kwargs)
        raise AttributeError(item)

    def __repr__(self) -> str:
        settings = "".join(f", {k}={v!r}" for k, v in self.settings.items())
        return f"Attack({self.name!r}, norm={self.norm!r}{settings})"


class _DryModel(torch.nn.Module):
    """Logits of many classes (so no class count a setting may assume is too large) from a 1x2x2 image,
    for the settings check of Attack._dry_run."""

    def __init__(self):
        super().__init__()
        # Fixed weights: drawing them (nn.Linear's init) would move the caller's global random stream.
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 4 * 1000).view(4, 1000).cos())

    def forward(self, x):
        return x.flatten(1) @ self.weight


SPECS: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    if spec.name in SPECS:
        raise ValueError(f"attack {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


for _spec in (
    AttackSpec("fgsm", fgsm, targeted=True, iterative=False, summary="one signed-gradient step"),
    AttackSpec("fgsm-rs", fgsm_rs, iterative=False, summary="FGSM from a random start (fast AT)"),
    AttackSpec("n-fgsm", n_fgsm, iterative=False, bounded=False, norms=("linf",),
               summary="noise 2 eps + FGSM step, unprojected (training only)"),
    AttackSpec("pgd", pgd, targeted=True, summary="projected gradient descent"),
    AttackSpec("apgd-ce", apgd, targeted=True, fixed={"loss": "ce"}, summary="Auto-PGD on cross-entropy"),
    AttackSpec("apgd-dlr", apgd, fixed={"loss": "dlr", "target": None}, summary="Auto-PGD on the DLR loss"),
    AttackSpec("apgd-t", apgd_targeted, summary="Auto-PGD, targeted DLR toward the top classes"),
    AttackSpec("fab", fab, targeted=True, minimal_norms=minimal_norms, summary="minimum-norm FAB"),
    AttackSpec("fab-t", fab_targeted, summary="FAB toward the top classes"),
    AttackSpec("square", square, targeted=True, gradients=False, summary="black-box random search"),
    AttackSpec("autoattack", autoattack, fixed={"return_stages": False},
               summary="APGD-CE, APGD-T, FAB-T, Square in sequence"),
    AttackSpec("autoattack-fast", fast_autoattack, fixed={"return_stages": False},
               summary="APGD-CE, APGD-T top-3, short Square; escalates to AutoAttack where they disagree"),
    AttackSpec("pgd-naive", naive_pgd, targeted=True, signature_of=pgd,
               summary="PGD on a purifier's classifier alone"),
    AttackSpec("pgd-adaptive", adaptive_pgd, targeted=True, summary="PGD through a purifier, EOT and BPDA"),
):
    register(_spec)


def build_attack(entry, norm: str = "linf", seed: int = 0, **settings):
    """An attack object from a config entry (see the module docstring); `settings` add to the entry's."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if isinstance(entry, Mapping):
        entry = {**entry, **settings}
        label = entry.pop("label", None)
        if "_target_" in entry:
            return _user_attack(entry, norm, seed, label)
        if "name" not in entry:
            raise ValueError(f"attack entry {entry!r} needs a `name` (one of {', '.join(SPECS)}) or a `_target_`")
        name = entry.pop("name")
        if name not in SPECS:
            raise ValueError(f"unknown attack {name!r}; registered attacks: {', '.join(SPECS)} "
                             "(or give a `_target_` class)")
        spec = SPECS[name]
        defaults = spec.settings
        changed = {k: v for k, v in entry.items() if k not in defaults or defaults[k] != v}
        return Attack(spec, norm=norm, seed=seed, settings=changed, label=label)
    if callable(entry):  # an attack object already built (e.g. by Hydra's recursive instantiation)
        _check_norm_supported(entry, norm)
        return entry
    raise ValueError(f"an attack entry must be a name, a mapping or an attack object, got {entry!r}")


def build_attacks(entries, norm: str = "linf", seed: int = 0) -> dict:
    """{name: attack} from a list of entries (evaluation.attacks); names must be unique."""
    if entries is None:
        return {}
    if isinstance(entries, (str, Mapping)):
        raise ValueError(f"evaluation.attacks must be a list of attack entries, got {entries!r}")
    attacks = {}
    for entry in entries:
        try:
            attack = build_attack(entry, norm=norm, seed=seed)
        except ValueError as error:
            raise ValueError(f"evaluation.attacks: {error}") from error
        name = attack_name(attack)
        if name in attacks:
            raise ValueError(f"evaluation.attacks: {name!r} appears twice; give one of them a `label`")
        if not getattr(attack, "bounded", True):
            raise ValueError(f"evaluation.attacks: {name!r} leaves the eps-ball (a training perturbation); "
                             "it cannot measure robust accuracy")
        attacks[name] = attack
    return attacks


def attack_name(attack) -> str:
    return getattr(attack, "name", None) or type(attack).__name__.lower()


def _user_attack(entry: dict, norm: str, seed: int, label: str | None):
    """A `_target_` entry: instantiated by Hydra; norm and seed are passed when it takes them."""
    from hydra.utils import get_object, instantiate

    target = get_object(entry["_target_"])
    accepts = inspect.signature(target).parameters if callable(target) else {}
    extra = {k: v for k, v in (("norm", norm), ("seed", seed)) if k in accepts and k not in entry}
    attack = instantiate(entry, **extra)
    if label is not None:
        try:
            attack.name = label
        except AttributeError as error:
            raise ValueError(f"label: cannot name the attack {entry['_target_']} {label!r}") from error
    _check_norm_supported(attack, norm)
    return attack


def _check_norm_supported(attack, norm: str) -> None:
    norms = getattr(attack, "norms", NORMS)
    own = getattr(attack, "norm", norm)
    if norm not in norms or own != norm:
        raise ValueError(f"norm: attack {attack_name(attack)!r} works in {own if own != norm else norms}, "
                         f"the run's norm is {norm!r}")
