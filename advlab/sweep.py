"""A multirun's accuracy-vs-eps grid, written when the sweep ends.

Hydra calls SweepSummary.on_multirun_end (registered in conf/config.yaml); it reads
each job's results.json and writes, into the sweep folder, sweep_summary.md (one
row per job: its overrides, clean accuracy and worst-case robust accuracy per eps,
with 95% intervals), sweep_summary.json and sweep_accuracy_vs_eps.png.
`python -m advlab.sweep multirun/NAME/DATE` does the same for a finished sweep.
"""

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from advlab import plots
from advlab.evaluation.stats import format_rate
from advlab.io import write_json, write_text


def _job_results(sweep_dir: Path) -> list[dict]:
    jobs = []
    for path in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (not p.parent.name.isdigit(), p.parent.name.zfill(6))):
        with open(path, encoding="utf-8") as f:
            jobs.append({"job": path.parent.name, **json.load(f)})
    return jobs


def _label(job: dict) -> str:
    keep = [o for o in job.get("overrides", []) if not o.startswith("+experiment=") and not o.startswith("+debug=")]
    return " ".join(keep) or f"job {job['job']}"


def write_sweep_summary(sweep_dir: str | Path) -> Path | None:
    sweep_dir = Path(sweep_dir)
    jobs = _job_results(sweep_dir)
    if not jobs:
        return None
    eps = sorted({e for job in jobs for e in job["robustness"]["eps"]})
    header = "| job | overrides | clean | " + " | ".join(f"worst case eps={e:g}" for e in eps) + " |"
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} runs, {jobs[0]['n_images']} test images each; accuracies with 95% Wilson intervals. "
        "Worst case: an image counts only if every evaluated attack fails on it.",
        "",
        header,
        "|" + "---|" * (3 + len(eps)),
    ]
    curves = {}
    for job in jobs:
        by_eps = dict(zip(job["robustness"]["eps"], job["robustness"]["accuracy"]["worst_case"]))
        cells = [format_rate(by_eps[e]) if e in by_eps else "-" for e in eps]
        lines.append(f"| {job['job']} | {_label(job)} | {format_rate(job['clean'])} | " + " | ".join(cells) + " |")
        if len(by_eps) > 1:
            curves[_label(job)] = (sorted(by_eps), [by_eps[e] for e in sorted(by_eps)])
    lines += ["", "![worst-case accuracy vs eps](sweep_accuracy_vs_eps.png)", ""]
    if curves:
        common = sorted(set.intersection(*(set(c[0]) for c in curves.values())))
        plots.rate_curves(common, {k: [dict(zip(c[0], c[1]))[e] for e in common] for k, c in curves.items()},
                          sweep_dir / "sweep_accuracy_vs_eps.png", ylabel="worst-case accuracy (%)",
                          title="sweep")
    write_json(sweep_dir / "sweep_summary.json", [
        {"job": j["job"], "overrides": j.get("overrides", []), "clean": j["clean"], "robustness": j["robustness"]}
        for j in jobs])
    return write_text(sweep_dir / "sweep_summary.md", "\n".join(lines))


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        path = write_sweep_summary(config.hydra.sweep.dir)
        if path is not None:
            print(f"sweep summary: {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.sweep SWEEP_DIR")
    print(write_sweep_summary(sys.argv[1]) or f"no */results.json under {sys.argv[1]}")
