"""A multirun's summary: its jobs as Results, compared in one table and one figure.

job_results reads each job's results.json (multirun/NAME/DATE/<job>/results.json) as a Results
object; write_sweep_summary writes, into the sweep folder, sweep_summary.md (one row per job: its
overrides, clean accuracy and worst-case robust accuracy per eps, with 95% intervals, then every
attack per eval eps), sweep_summary.json and sweep_accuracy_vs_eps.png.

    python -m advlab.sweep multirun/NAME/DATE     # the summary files only
    python -m advlab.report multirun/NAME/DATE    # the summary and the HTML reports

When a sweep ends, Hydra's callback advlab.report.SweepSummary (registered in conf/config.yaml)
writes both. This module does not import advlab.report; the report builds on it.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from advlab.figures import draw
from advlab.io import write_json, write_text
from advlab.results import WORST_CASE, Results
from advlab.stats import Rate


class Job(NamedTuple):
    """One job of a sweep: its folder's name in the sweep folder ("0", "1", ...) and its results."""

    name: str
    results: Results


def job_results(sweep_dir: str | Path) -> list[Job]:
    """Every job with a results.json, in job order (numbered folders first, numerically)."""
    paths = sorted(Path(sweep_dir).glob("*/results.json"),
                   key=lambda p: (not p.parent.name.isdigit(), p.parent.name.zfill(6)))
    return [Job(p.parent.name, Results.load(p)) for p in paths]


def parsed_overrides(job: Job) -> dict[str, str]:
    return dict(o.split("=", 1) for o in job.results.overrides if "=" in o)


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs (or that only some jobs set), in command-line order."""
    parsed = [parsed_overrides(j) for j in jobs]
    keys = dict.fromkeys(k for p in parsed for k in p)
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def shared_overrides(jobs: list[Job]) -> list[str]:
    """The overrides every job was given with the same value."""
    swept = set(swept_keys(jobs))
    return [o for o in jobs[0].results.overrides if o.split("=", 1)[0] not in swept]


def job_label(job: Job, keys: list[str] | None = None) -> str:
    """The job's values of the swept `keys`, e.g. "eps=0.01 alpha=0"; without keys, all but experiment and debug."""
    if keys:
        parsed = parsed_overrides(job)
        keep = [f"{k}={parsed[k]}" for k in keys if k in parsed]
    else:
        keep = [o for o in job.results.overrides if not o.startswith(("+experiment=", "+debug="))]
    return " ".join(keep) or f"job {job.name}"


@dataclass
class Row:
    """One run at one eval eps > 0, as the per-attack comparison shows it."""

    job: str
    label: str
    norm: str
    eps: float
    clean: Rate
    attacks: dict[str, Rate]  # the attacks this run evaluated
    worst_case: Rate
    certified: Rate | None  # None where the run has no certified accuracy at this eps


def _certified_at(results: Results, e: float) -> Rate | None:
    try:
        return results.certified.at(e) if results.certified else None
    except KeyError:
        return None


def comparison_rows(jobs: list[Job]) -> tuple[list[str], list[Row]]:
    """One row per run and eval eps > 0: its label, norm and eps, clean accuracy, each attack's accuracy, the
    per-image worst case over all attacks, and the certified accuracy where the model has one.
    Returns (the attack names of all runs, rows)."""
    keys = swept_keys(jobs)
    attacks = list(dict.fromkeys(a for j in jobs for a in j.results.attacks))
    rows = []
    for job in jobs:
        r = job.results
        rows += [Row(job.name, job_label(job, keys), r.norm, e, r.clean,
                     {a: r.robust(a, e) for a in r.attacks}, r.worst_case(e), _certified_at(r, e))
                 for e in r.eps if e != 0]
    return attacks, rows


def _comparison_markdown(jobs: list[Job]) -> list[str]:
    attacks, rows = comparison_rows(jobs)
    has_certified = any(r.certified for r in rows)
    columns = ["run", "norm", "eps", "clean", *attacks, "worst case", *(["certified"] if has_certified else [])]
    lines = ["## Per attack", "",
             "Accuracy under each attack and the per-image worst case over all of them (the robust accuracy); "
             "certified: provably robust from the model's Lipschitz margins.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r.label, r.norm, f"{r.eps:.4g}", str(r.clean),
                 *(str(r.attacks[a]) if a in r.attacks else "-" for a in attacks), f"**{r.worst_case}**"]
        if has_certified:
            cells.append(str(r.certified) if r.certified else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _worst_case_curves(jobs: list[Job], keys: list[str], path: Path) -> None:
    """sweep_accuracy_vs_eps.png: each job's worst case at the eval eps every job shares (jobs with one eps
    have no curve; nothing is drawn when no job has one)."""
    curves = {job_label(j, keys): j.results.robustness.by_eps(WORST_CASE) for j in jobs if len(j.results.eps) > 1}
    if not curves:
        return
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    norms = {j.results.norm for j in jobs}
    draw.rate_curves(common, {k: [c[e] for e in common] for k, c in curves.items()}, path,
                      ylabel="worst-case accuracy (%)", title="sweep",
                      norm=norms.pop() if len(norms) == 1 else "linf")


def _summary_json(job: Job) -> dict:
    r = job.results
    return {"job": job.name, "overrides": r.overrides, "clean": r.clean.to_dict(),
            "robustness": r.robustness.to_dict("accuracy"),
            **({"certified": r.certified.to_dict()} if r.certified else {})}


def write_sweep_summary(sweep_dir: str | Path, jobs: list[Job] | None = None) -> Path | None:
    """sweep_summary.md, sweep_summary.json and sweep_accuracy_vs_eps.png in the sweep folder, from `jobs`
    (by default, read from it). Returns the markdown's path; None, writing nothing, when there are no jobs."""
    sweep_dir = Path(sweep_dir)
    jobs = job_results(sweep_dir) if jobs is None else jobs
    if not jobs:
        return None
    eps = sorted({e for job in jobs for e in job.results.eps})
    keys = swept_keys(jobs)
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} runs, {jobs[0].results.n_images} test images each; accuracies with 95% Wilson intervals. "
        "Worst case: an image counts only if every evaluated attack fails on it.",
        "",
        f"Overrides shared by every run: `{' '.join(shared_overrides(jobs)) or '(none)'}`",
        "",
        "| job | overrides | clean | " + " | ".join(f"worst case eps={e:g}" for e in eps) + " |",
        "|" + "---|" * (3 + len(eps)),
    ]
    for job in jobs:
        by_eps = job.results.robustness.by_eps(WORST_CASE)
        cells = [str(by_eps[e]) if e in by_eps else "-" for e in eps]
        lines.append(f"| {job.name} | {job_label(job, keys)} | {job.results.clean} | " + " | ".join(cells) + " |")
    lines += ["", "![worst-case accuracy vs eps](sweep_accuracy_vs_eps.png)", ""]
    lines += _comparison_markdown(jobs)
    _worst_case_curves(jobs, keys, sweep_dir / "sweep_accuracy_vs_eps.png")
    write_json(sweep_dir / "sweep_summary.json", [_summary_json(j) for j in jobs])
    return write_text(sweep_dir / "sweep_summary.md", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.sweep SWEEP_DIR   (writes its sweep_summary.md/.json/.png)")
    summary = write_sweep_summary(sys.argv[1])
    if summary is None:
        sys.exit(f"no */results.json under {sys.argv[1]}")
    print(f"sweep summary: {summary}")
