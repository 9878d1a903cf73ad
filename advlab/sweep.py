"""A multirun's accuracy-vs-eps grid, written when the sweep ends.

Hydra calls SweepSummary.on_multirun_end (registered in conf/config.yaml); it reads
each job's results.json and writes, into the sweep folder, sweep_summary.md (one
row per job: its overrides, clean accuracy and worst-case robust accuracy per eps,
with 95% intervals), sweep_summary.json, sweep_accuracy_vs_eps.png and the HTML
report (report.html, with each run's own report.html; see advlab/report.py).
`python -m advlab.sweep multirun/NAME/DATE` does the same for a finished sweep.
"""

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from advlab import plots
from advlab.evaluation.stats import format_rate
from advlab.io import write_json, write_text


def job_results(sweep_dir: Path) -> list[dict]:
    jobs = []
    for path in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (not p.parent.name.isdigit(), p.parent.name.zfill(6))):
        with open(path, encoding="utf-8") as f:
            jobs.append({"job": path.parent.name, **json.load(f)})
    return jobs


def parsed_overrides(job: dict) -> dict[str, str]:
    return dict(o.split("=", 1) for o in job.get("overrides", []) if "=" in o)


def swept_keys(jobs: list[dict]) -> list[str]:
    """The override keys whose value differs between jobs (or that only some jobs set), in command-line order."""
    parsed = [parsed_overrides(j) for j in jobs]
    keys = dict.fromkeys(k for p in parsed for k in p)
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def shared_overrides(jobs: list[dict]) -> list[str]:
    """The overrides every job was given with the same value."""
    swept = set(swept_keys(jobs))
    return [o for o in jobs[0].get("overrides", []) if o.split("=", 1)[0] not in swept]


def job_label(job: dict, keys: list[str] | None = None) -> str:
    """The job's values of the swept `keys`, e.g. "eps=0.01 alpha=0"; without keys, all but experiment and debug."""
    if keys:
        parsed = parsed_overrides(job)
        keep = [f"{k}={parsed[k]}" for k in keys if k in parsed]
    else:
        keep = [o for o in job.get("overrides", []) if not o.startswith(("+experiment=", "+debug="))]
    return " ".join(keep) or f"job {job['job']}"


def comparison_rows(jobs: list[dict]) -> tuple[list[str], list[dict]]:
    """One row per run and eval eps > 0: the run's label, norm and eps, clean accuracy, each attack's
    accuracy, the per-image worst case over all attacks, and the certified accuracy where the model
    has one (Rate dicts, None where a run did not measure it). Returns (attack names, rows)."""
    keys = swept_keys(jobs)
    attacks = list(dict.fromkeys(a for j in jobs for a in j["robustness"]["accuracy"] if a != "worst_case"))
    rows = []
    for job in jobs:
        rob = job["robustness"]
        certified = job.get("certified", {})
        for i, e in enumerate(rob["eps"]):
            if e == 0:
                continue
            rows.append({
                "job": job["job"], "label": job_label(job, keys),
                "norm": job.get("config", {}).get("evaluation", {}).get("norm", "linf"), "eps": e,
                "clean": job["clean"], "worst_case": rob["accuracy"]["worst_case"][i],
                "attacks": {a: rob["accuracy"][a][i] for a in attacks if a in rob["accuracy"]},
                "certified": dict(zip(certified.get("eps", []), certified.get("accuracy", []))).get(e),
            })
    return attacks, rows


def _comparison_markdown(jobs: list[dict]) -> list[str]:
    attacks, rows = comparison_rows(jobs)
    has_certified = any(r["certified"] for r in rows)
    columns = ["run", "norm", "eps", "clean", *attacks, "worst case", *(["certified"] if has_certified else [])]
    lines = ["## Per attack", "",
             "Accuracy under each attack and the per-image worst case over all of them (the robust accuracy); "
             "certified: provably robust from the model's Lipschitz margins.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r["label"], r["norm"], f"{r['eps']:.4g}", format_rate(r["clean"]),
                 *(format_rate(r["attacks"][a]) if a in r["attacks"] else "-" for a in attacks),
                 f"**{format_rate(r['worst_case'])}**"]
        if has_certified:
            cells.append(format_rate(r["certified"]) if r["certified"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_sweep_summary(sweep_dir: str | Path) -> Path | None:
    sweep_dir = Path(sweep_dir)
    jobs = job_results(sweep_dir)
    if not jobs:
        return None
    eps = sorted({e for job in jobs for e in job["robustness"]["eps"]})
    keys = swept_keys(jobs)
    header = "| job | overrides | clean | " + " | ".join(f"worst case eps={e:g}" for e in eps) + " |"
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} runs, {jobs[0]['n_images']} test images each; accuracies with 95% Wilson intervals. "
        "Worst case: an image counts only if every evaluated attack fails on it.",
        "",
        f"Overrides shared by every run: `{' '.join(shared_overrides(jobs)) or '(none)'}`",
        "",
        header,
        "|" + "---|" * (3 + len(eps)),
    ]
    curves = {}
    for job in jobs:
        by_eps = dict(zip(job["robustness"]["eps"], job["robustness"]["accuracy"]["worst_case"]))
        cells = [format_rate(by_eps[e]) if e in by_eps else "-" for e in eps]
        lines.append(f"| {job['job']} | {job_label(job, keys)} | {format_rate(job['clean'])} | "
                     + " | ".join(cells) + " |")
        if len(by_eps) > 1:
            curves[job_label(job, keys)] = (sorted(by_eps), [by_eps[e] for e in sorted(by_eps)])
    lines += ["", "![worst-case accuracy vs eps](sweep_accuracy_vs_eps.png)", ""]
    lines += _comparison_markdown(jobs)
    if curves:
        common = sorted(set.intersection(*(set(c[0]) for c in curves.values())))
        plots.rate_curves(common, {k: [dict(zip(c[0], c[1]))[e] for e in common] for k, c in curves.items()},
                          sweep_dir / "sweep_accuracy_vs_eps.png", ylabel="worst-case accuracy (%)",
                          title="sweep")
    write_json(sweep_dir / "sweep_summary.json", [
        {"job": j["job"], "overrides": j.get("overrides", []), "clean": j["clean"], "robustness": j["robustness"],
         **({"certified": j["certified"]} if "certified" in j else {})} for j in jobs])
    return write_text(sweep_dir / "sweep_summary.md", "\n".join(lines))


def write_sweep_files(sweep_dir: str | Path) -> bool:
    """The summary, then the HTML report (which also writes every run's report); False when no job finished."""
    from advlab.report import write_report  # report builds on this module: imported here, not at the top

    path = write_sweep_summary(sweep_dir)
    if path is None:
        return False
    print(f"sweep summary: {path}")
    print(f"sweep report: {write_report(sweep_dir)}")
    return True


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        write_sweep_files(config.hydra.sweep.dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.sweep SWEEP_DIR")
    if not write_sweep_files(sys.argv[1]):
        sys.exit(f"no */results.json under {sys.argv[1]}")
