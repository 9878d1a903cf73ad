"""The per-image record: the evaluation's source of truth, one row per test image.

Every rate, interval, table, curve and check of a Results is computed from it (`rates`), it is saved
beside results.json as per_image.csv.gz (pandas reads it in one line: pd.read_csv(path)), and runs
can be merged through it. Its columns (eps written with 6 significant digits, `{e:.6g}`):

    index                 the image's position in the evaluated test set
    label                 its class
    clean_pred            the model's prediction at x
    clean_margin          z_label - max_{j != label} z_j at x (logits, float32; > 0: correctly classified)
    survived:A@E          1 when the image is still classified correctly after attack A at eps E, 0 when
                          not; empty where A did not attack it (misclassified at x, or, for an attack run
                          on the images still robust only, broken before)
    margin:A@E            the logit margin at the point attack A returned (> 0: still correct; empty as above)
    survived:worst_case@E 1 when the image is correct at x and survived every attack at every eps <= E
    broken_by@E           the first attack (in the evaluation's order) that broke it at E, or at the
                          smallest eps where it fell; "clean" when it is misclassified at x; empty if robust
    perturbed@E           1 when FGSM applied to the image (whatever its clean prediction) leaves it
                          correct: the seed study's perturbed accuracy (L-inf)
    targeted:A@E          1 when attack A aimed at the target class reaches it; empty for images of that class
    min_norm:A            the smallest adversarial perturbation a minimum-norm attack A (FAB) found: its
                          distance to the decision boundary (0 when misclassified, inf when none found)

Which run produced each attack's columns (`sources`) and the order of the attacks are kept in
results.json ("per_image"), with the file's name.
"""

import csv
import gzip
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advlab.io import atomic_path

FILE = "per_image.csv.gz"
WORST = "worst_case"
BASE_COLUMNS = ("index", "label", "clean_pred", "clean_margin")


def fmt(eps: float) -> str:
    return f"{eps:.6g}"


def col(kind: str, name: str | None, eps: float | None = None) -> str:
    """A column's name: col("survived", "pgd", 0.01) -> "survived:pgd@0.01"; col("broken_by", None, e)."""
    head = kind if name is None else f"{kind}:{name}"
    return head if eps is None else f"{head}@{fmt(eps)}"


@dataclass
class PerImage:
    """Columns (name -> numpy array, one entry per image, sorted by index) and what they cover.

    attacks: the evaluation's attacks in order (the worst case's order); complete: the attacks whose
    survived columns cover every correctly classified image (their own curve is then a rate);
    sources: attack -> the run that produced its columns; target: the targeted attacks' class."""

    eps: list[float]
    attacks: list[str]
    columns: dict[str, np.ndarray]
    complete: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    target: int | None = None
    fingerprint: dict = field(default_factory=dict)  # {"model": weights SHA-256, "data": images+labels SHA-256}

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.columns["index"])

    @property
    def correct(self) -> np.ndarray:
        return self.columns["clean_pred"] == self.columns["label"]

    def survived(self, attack: str, eps: float) -> np.ndarray:
        """Float: 1, 0, or nan where the attack did not run on the image."""
        return self.columns[col("survived", attack, eps)]

    def worst(self, eps: float) -> np.ndarray:
        return self.columns[col("survived", WORST, eps)].astype(bool)

    def has(self, name: str) -> bool:
        return name in self.columns

    def targeted_attacks(self) -> list[str]:
        return [a for a in self.attacks if self.has(col("targeted", a, self.eps[0]))] if self.eps else []

    def min_norm_attacks(self) -> list[str]:
        return [a for a in self.attacks if self.has(col("min_norm", a))]

    def __eq__(self, other) -> bool:
        if not isinstance(other, PerImage):
            return NotImplemented
        same_meta = (self.eps == other.eps and self.attacks == other.attacks and self.complete == other.complete
                     and self.target == other.target and set(self.columns) == set(other.columns))
        return same_meta and all(_equal(self.columns[k], other.columns[k]) for k in self.columns)

    # ------------------------------------------------------------------ building

    def worst_case(self) -> None:
        """(Re)compute survived:worst_case@E and broken_by@E from the attacks' columns, eps increasing:
        an image fooled at a smaller eps is fooled at every larger one."""
        alive = self.correct.copy()
        broken = np.where(alive, "", "clean").astype(object)
        for e in self.eps:
            here = np.zeros(len(self), dtype=object)
            here[:] = ""
            for attack in self.attacks:
                fell = self.survived(attack, e) == 0  # nan (not run) counts as not fallen
                here[(here == "") & fell & self.correct] = attack
            newly = alive & (here != "")
            broken[newly] = here[newly]
            alive &= here == ""
            self.columns[col("survived", WORST, e)] = alive.astype(np.float64)
            self.columns[col("broken_by", None, e)] = broken.copy()

    @staticmethod
    def concat(parts: Sequence["PerImage"]) -> "PerImage":
        """The rows of several records of the same evaluation (batches, ranks, a resumed run), by index."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        first = parts[0]
        keys = list(first.columns)
        joined = {k: np.concatenate([p.columns[k] for p in parts]) for k in keys}
        order = np.argsort(joined["index"], kind="stable")
        return PerImage(list(first.eps), list(first.attacks), {k: v[order] for k, v in joined.items()},
                        list(first.complete), dict(first.sources), first.target, dict(first.fingerprint))

    # ------------------------------------------------------------------ the table and the file

    def table(self) -> dict[str, np.ndarray]:
        """The columns, in the schema's order (the module docstring)."""
        order = [*BASE_COLUMNS]
        order += [k for k in self.columns if k.startswith("min_norm:")]
        for e in self.eps:
            for a in self.attacks:
                order += [col("survived", a, e), col("margin", a, e)]
            order += [col("survived", WORST, e), col("broken_by", None, e), col("perturbed", None, e)]
            order += [col("targeted", a, e) for a in self.attacks]
        return {k: self.columns[k] for k in order if k in self.columns}

    def to_pandas(self):
        """The record as a pandas DataFrame (pandas is not a dependency of advlab: install it to use this)."""
        import pandas as pd

        return pd.DataFrame(self.table())

    def save(self, path: str | Path) -> Path:
        """per_image.csv.gz, written atomically; margins and norms at float32 precision (as the record holds
        them, so loading gives the same record), survival as 0/1."""
        table = self.table()
        names = list(table)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        cells = [_cells(name, table[name]) for name in names]
        writer.writerows(zip(*cells))
        with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
            f.write(text.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, meta: dict) -> "PerImage":
        """A saved record, with the metadata results.json keeps for it (`meta()`)."""
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        names, body = rows[0], rows[1:]
        columns = {name: _parse(name, [r[i] for r in body]) for i, name in enumerate(names)}
        return cls([float(e) for e in meta["eps"]], list(meta["attacks"]), columns, list(meta.get("complete", [])),
                   dict(meta.get("sources", {})), meta.get("target"), dict(meta.get("fingerprint", {})))

    def meta(self, file: str = FILE) -> dict:
        """What results.json keeps about the record."""
        return {"file": file, "eps": self.eps, "attacks": self.attacks, "complete": self.complete,
                "sources": self.sources, "target": self.target, "fingerprint": self.fingerprint, "n": len(self)}


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _cells(name: str, values: np.ndarray) -> list[str]:
    if values.dtype == object:
        return [str(v) for v in values]
    if name in ("index", "label", "clean_pred"):
        return [str(int(v)) for v in values]
    if name.startswith(("survived:", "perturbed", "targeted:")):
        return ["" if math.isnan(v) else str(int(v)) for v in values]
    # the shortest text that reads back as the same float32 (the precision the record keeps)
    return ["" if math.isnan(v) else str(np.float32(v)) for v in values]


def _parse(name: str, cells: list[str]) -> np.ndarray:
    if name.startswith("broken_by"):
        return np.array(cells, dtype=object)
    if name in ("index", "label", "clean_pred"):
        return np.array([int(c) for c in cells], dtype=np.int64)
    return np.array([c if c else "nan" for c in cells], dtype=np.float32).astype(np.float64)
