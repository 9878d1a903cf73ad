"""Merging an evaluation into a finished one: the new attacks run only on the images the finished run
left robust, and the union is one per-image record (advlab.evaluation.robustness.extend_robustness).

    advlab +experiment=evaluate checkpoint=RUN/model.pt evaluation.merge=RUN evaluation.attacks=[square]

The worst case can only go down; each attack's columns say which run produced them (record.sources).
A run of another model (its weights' SHA-256), other test data (images and labels) or other eps is
refused, in one line: a union of those would not be one evaluation.
"""

import math
from pathlib import Path

from advlab.errors import UserFileError
from advlab.results import Results


def load_base(run: str | Path, model_sha: str, data_sha: str, eps: list[float], norm: str) -> Results:
    """The finished run's results with its record, after checking it evaluated this model, data and eps."""
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise UserFileError(f"evaluation.merge: no results.json at {path} (give a run folder or its results.json)")
    base = Results.load(path)
    record = base.per_image
    if record is None:
        raise UserFileError(f"evaluation.merge: {path} has no per-image record (per_image.csv.gz); evaluate it "
                            "again with this advlab to merge into it")
    seen = record.fingerprint
    if seen.get("model") != model_sha:
        raise UserFileError(f"evaluation.merge: {path} evaluated another model (weights SHA-256 "
                            f"{str(seen.get('model'))[:12]}, this one {model_sha[:12]})")
    if seen.get("data") != data_sha:
        raise UserFileError(f"evaluation.merge: {path} evaluated other test data (images and labels SHA-256 "
                            f"{str(seen.get('data'))[:12]}, these {data_sha[:12]})")
    if len(record.eps) != len(eps) or not all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(record.eps, eps)):
        raise UserFileError(f"evaluation.merge: {path} evaluated eps {record.eps}, this evaluation "
                            f"{eps}; give evaluation.eps={record.eps}")
    if base.norm != norm:
        raise UserFileError(f"evaluation.merge: {path} evaluated in {base.norm}, this evaluation in {norm}")
    for name, source in record.sources.items():
        if source == "this run":
            record.sources[name] = str(path.parent)
    return base
