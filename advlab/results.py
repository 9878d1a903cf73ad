"""A run's results as typed objects: what the evaluation measured, and what the run was.

    results = advlab.evaluate(model, x, y, eps=[8/255], attacks=["pgd", "apgd-t"])
    results.robust("apgd-t", 8/255)        # Rate(successes=..., n=...): value, ci95
    results.worst_case(8/255)              # the per-image worst case over every attack
    results.save("results.json"); Results.load("results.json")

Every writer (console, seed-study report, sweep summary, HTML report, W&B) renders from a Results
object. On disk it is results.json, versioned by its `schema` field; files of the first version
(no `schema`, the same layout) load as well.
"""

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from advlab.stats import Rate
from advlab.io import write_json

SCHEMA = "advlab-results-v2"
WORST_CASE = "worst_case"
# The evaluation checks, in the order they are run and shown (advlab.evaluation.checks).
CHECK_NAMES = ("monotone", "large_eps", "iterative", "black_box", "convergence", "label_leaking")
# Checks run only when the evaluation has what they judge: "transfer" with evaluation.transfer_from.
OPTIONAL_CHECKS = ("transfer",)


def _rates(items) -> list[Rate]:
    return [Rate.from_dict(r) for r in items]


def _index(eps: list[float], e: float) -> int:
    for i, value in enumerate(eps):
        if math.isclose(value, e, rel_tol=1e-9, abs_tol=1e-12):
            return i
    raise KeyError(f"eps={e:g} was not evaluated (evaluated: {', '.join(f'{v:g}' for v in eps)})")


@dataclass
class Curves:
    """One Rate per eps for each named curve (an attack, or the worst case)."""

    eps: list[float]
    rates: dict[str, list[Rate]]

    def at(self, name: str, eps: float) -> Rate:
        if name not in self.rates:
            raise KeyError(f"{name!r} was not evaluated (evaluated: {', '.join(self.rates)})")
        return self.rates[name][_index(self.eps, eps)]

    def by_eps(self, name: str) -> dict[float, Rate]:
        return dict(zip(self.eps, self.rates[name]))

    def to_dict(self, key: str) -> dict:
        return {"eps": self.eps, key: {k: [r.to_dict() for r in v] for k, v in self.rates.items()}}

    @classmethod
    def from_dict(cls, d: dict, key: str) -> "Curves":
        return cls(list(d["eps"]), {k: _rates(v) for k, v in d[key].items()})


@dataclass
class Targeted:
    """Targeted success toward one class, over the images whose true class is another."""

    target: int
    target_name: str | None
    success: Curves

    def to_dict(self) -> dict:
        return {"target": self.target, "target_name": self.target_name, **self.success.to_dict("success")}

    @classmethod
    def from_dict(cls, d: dict) -> "Targeted":
        return cls(d["target"], d.get("target_name"), Curves.from_dict(d, "success"))


@dataclass
class Certified:
    """Provable accuracy from a Lipschitz bound (L2): the margin certifies the radius."""

    lipschitz_constant: float
    eps: list[float]
    accuracy: list[Rate]

    def at(self, eps: float) -> Rate:
        return self.accuracy[_index(self.eps, eps)]

    def to_dict(self) -> dict:
        return {"eps": self.eps, "lipschitz_constant": self.lipschitz_constant,
                "accuracy": [r.to_dict() for r in self.accuracy]}

    @classmethod
    def from_dict(cls, d: dict) -> "Certified":
        return cls(d["lipschitz_constant"], list(d["eps"]), _rates(d["accuracy"]))


@dataclass
class Check:
    """One evaluation check: PASS, WARN (the number may be an artefact of the attack) or SKIP."""

    name: str
    status: str
    detail: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in CHECK_NAMES + OPTIONAL_CHECKS:
            raise ValueError(f"check name must be one of {CHECK_NAMES + OPTIONAL_CHECKS}, got {self.name!r}")
        if self.status not in ("PASS", "WARN", "SKIP"):
            raise ValueError(f"check status must be PASS, WARN or SKIP, got {self.status!r}")

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "numbers": self.numbers}


@dataclass
class Results:
    """What one evaluation measured (first block) and, for a run, what the run was (second block)."""

    n_images: int
    clean: Rate
    confusion: list[list[int]]  # counts, rows = true class, columns = predicted class
    robustness: Curves  # each attack's accuracy per eps, and the worst case ("worst_case")
    perturbed: Curves | None = None  # "fgsm": accuracy with FGSM applied to every image (label leaking)
    targeted: Targeted | None = None
    certified: Certified | None = None
    checks: list[Check] = field(default_factory=list)
    convergence: dict | None = None  # PGD and APGD loss and margin per iteration (advlab.evaluation.convergence)
    notes: list[str] = field(default_factory=list)  # what the evaluation decided on its own (a fallback, ...)
    # The per-image record every number above is computed from (advlab.evaluation.record.PerImage; saved
    # beside results.json as per_image.csv.gz), and, when asked for, the worst-case adversarial images per eps.
    # Results compare by their numbers; records compare on their own (PerImage.__eq__).
    per_image: "PerImage | None" = field(default=None, compare=False, repr=False)
    adversarial: dict | None = field(default=None, compare=False, repr=False)

    name: str = ""
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    evaluation_seconds: float | None = None

    # ------------------------------------------------------------------ lookups

    @property
    def eps(self) -> list[float]:
        return self.robustness.eps

    @property
    def attacks(self) -> list[str]:
        """The attacks with a curve of their own (all of them unless evaluated AutoAttack-style)."""
        return [a for a in self.robustness.rates if a != WORST_CASE]

    def robust(self, attack: str, eps: float) -> Rate:
        return self.robustness.at(attack, eps)

    def worst_case(self, eps: float) -> Rate:
        return self.robustness.at(WORST_CASE, eps)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def norm(self) -> str:
        return self.config.get("evaluation", {}).get("norm", "linf")

    def row_percent(self) -> list[list[float]]:
        """The confusion matrix with each row (true class) summing to 100% (rows with no images stay 0)."""
        return [[100 * c / max(sum(row), 1) for c in row] for row in self.confusion]

    def headline(self) -> dict:
        """Clean and worst-case robust accuracy per eps (and certified, where measured), as plain numbers."""
        metrics = {"n_images": self.n_images, "clean": self.clean.value, "norm": self.norm, "attacks": self.attacks,
                   "worst_case": {f"{e:g}": r.value for e, r in self.robustness.by_eps(WORST_CASE).items()}}
        if self.certified:
            metrics["certified"] = {f"{e:g}": r.value for e, r in zip(self.certified.eps, self.certified.accuracy)}
        return metrics

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, "name": self.name, "seed": self.seed, "provenance": self.provenance,
             "overrides": self.overrides, "training": self.training, "n_images": self.n_images,
             "clean": self.clean.to_dict(),
             "confusion_matrix": {"counts": self.confusion, "row_percent": self.row_percent()},
             "robustness": self.robustness.to_dict("accuracy")}
        if self.perturbed is not None:
            d["perturbed"] = {"attack": "fgsm", "eps": self.perturbed.eps,
                              "accuracy": [r.to_dict() for r in self.perturbed.rates["fgsm"]]}
        if self.targeted is not None:
            d["targeted"] = self.targeted.to_dict()
        if self.certified is not None:
            d["certified"] = self.certified.to_dict()
        d["checks"] = [c.to_dict() for c in self.checks]
        if self.notes:
            d["notes"] = self.notes
        if self.convergence is not None:
            d["convergence"] = self.convergence
        if self.per_image is not None:
            d["per_image"] = self.per_image.meta()
        d["evaluation_seconds"] = self.evaluation_seconds
        d["figures"] = self.figures
        d["config"] = self.config
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Results":
        schema = d.get("schema", "advlab-results-v1")
        if schema not in ("advlab-results-v1", SCHEMA):
            raise ValueError(f"results: unknown schema {schema!r} (this advlab reads advlab-results-v1 and {SCHEMA})")
        perturbed = d.get("perturbed")
        known = {f.name for f in fields(cls)}
        meta = {k: d[k] for k in ("name", "seed", "overrides", "training", "provenance", "config", "figures",
                                  "evaluation_seconds") if k in d and k in known and d[k] is not None}
        return cls(
            n_images=d["n_images"], clean=Rate.from_dict(d["clean"]), confusion=d["confusion_matrix"]["counts"],
            robustness=Curves.from_dict(d["robustness"], "accuracy"),
            perturbed=Curves(list(perturbed["eps"]), {"fgsm": _rates(perturbed["accuracy"])}) if perturbed else None,
            targeted=Targeted.from_dict(d["targeted"]) if d.get("targeted") else None,
            certified=Certified.from_dict(d["certified"]) if d.get("certified") else None,
            checks=[Check(**c) for c in d.get("checks", [])], convergence=d.get("convergence"),
            notes=list(d.get("notes", [])), **meta)

    def save(self, path: str | Path) -> Path:
        """results.json at `path`, and the per-image record beside it (per_image.csv.gz) first: results.json,
        written last and atomically, marks a complete run."""
        path = Path(path)
        if self.per_image is not None:
            self.per_image.save(path.parent / self.per_image.meta()["file"])
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        """A results.json, with its per-image record when the file beside it holds one."""
        from advlab.evaluation.record import PerImage

        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            results = cls.from_dict(d)
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"results: {path} is not an advlab results file ({error!r})") from error
        meta = d.get("per_image")
        if meta and (path.parent / meta["file"]).is_file():
            results.per_image = PerImage.load(path.parent / meta["file"], meta)
        return results

    # ------------------------------------------------------------------ text

    def summary_lines(self) -> list[str]:
        """The console summary: clean accuracy, every curve, targeted success, the checks."""
        lines = [f"{self.name or 'results'}: clean accuracy {self.clean} on {self.n_images} test images"]
        for name, rates in self.robustness.rates.items():
            lines.append(f"  {name:>10}: " + "  ".join(f"eps={e:g} {r}" for e, r in zip(self.eps, rates)))
        if self.targeted:
            t = self.targeted
            for name, rates in t.success.rates.items():
                lines.append(f"  targeted {name} -> {t.target_name or t.target}: "
                             + "  ".join(f"eps={e:g} {r}" for e, r in zip(t.success.eps, rates)))
        if self.certified:
            lines.append("  certified: " + "  ".join(f"eps={e:g} {r}"
                                                     for e, r in zip(self.certified.eps, self.certified.accuracy)))
        lines += [f"  [{c.status}] {c.name}: {c.detail}" for c in self.checks]
        lines += [f"  note: {note}" for note in self.notes]
        return lines
