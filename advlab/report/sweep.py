"""The HTML report of a multirun sweep (report.html in the sweep folder): its runs, accuracy grids and
curves, and the Hydra callback that writes a sweep's summary and reports when the multirun ends."""

import math
from pathlib import Path

from hydra.experimental.callback import Callback

from advlab.figures import draw
from advlab.io import write_text
from advlab.report.page import (REPORT, checks_summary, escape, eps_header, figure, page, rate_cells, table,
                                worst_by_eps)
from advlab.report.run import write_run_report
from advlab.results import Results
from advlab.sweep import (Job, comparison_rows, job_label, job_results, parsed_overrides, shared_overrides,
                          swept_keys, write_sweep_summary)

def _at(results: Results, attack: str, e: float) -> float:
    """Accuracy (%) of `attack` at eval eps e, NaN when this run did not evaluate it."""
    try:
        return 100 * results.robustness.at(attack, e).value
    except KeyError:
        return math.nan


def _train_eps(job: Job) -> float:
    return float(job.results.config.get("eps", parsed_overrides(job).get("eps", "nan")))


def _attacks(jobs: list[Job]) -> list[str]:
    return list(dict.fromkeys(a for j in jobs for a in j.results.robustness.rates))


def _panels(attacks: list[str], cells: list[list[tuple[Results | None, float]]]) -> dict[str, list[list[float]]]:
    """One grid of accuracies (%) per attack from a grid of (run, eval eps) cells (no run: NaN)."""
    return {a.replace("_", " "): [[_at(r, a, e) if r is not None else math.nan for r, e in row] for row in cells]
            for a in attacks}


def _matched_heatmap(sweep_dir: Path, jobs: list[Job], keys: list[str]) -> tuple[Path, str] | None:
    """Rows: the swept overrides other than eps; columns: the training eps; each cell the model trained at
    that eps evaluated at that same eps. None when no cell was evaluated."""
    others = [k for k in keys if k != "eps"]
    train_eps = sorted({_train_eps(j) for j in jobs})
    row_of = {j.name: job_label(j, others) if others else "all" for j in jobs}
    rows = list(dict.fromkeys(row_of.values()))
    cell = {(row_of[j.name], _train_eps(j)): j.results for j in jobs}
    panels = _panels(_attacks(jobs), [[(cell.get((r, e)), e) for e in train_eps] for r in rows])
    if not any(math.isfinite(v) for grid in panels.values() for row in grid for v in row):
        return None
    path = draw.heatmap(panels, rows, [f"{e:g}" for e in train_eps], sweep_dir / "sweep_heatmap_matched.png",
                         title="accuracy (%) of each model at its own training eps",
                         xlabel="training eps = eval eps", ylabel=" ".join(others))
    return path, ("Each model evaluated at the eps it was trained with: rows are the other swept overrides, "
                  "columns the training eps, one panel per attack.")


def sweep_heatmaps(sweep_dir: str | Path, jobs: list[Job]) -> dict[str, tuple[Path, str]]:
    """The sweep's accuracy grids, one panel per attack, written as PNGs: {key: (png, caption)}.

    "grid": a row per job (labelled by its swept overrides), a column per eval eps.
    "matched" (when the training eps itself is swept): rows are the other swept overrides
    (e.g. alpha), columns the training eps, each cell the model trained at that eps
    evaluated at that same eps -- the eps x alpha x attack grid of adversarial training.
    """
    sweep_dir = Path(sweep_dir)
    keys = swept_keys(jobs)
    eval_eps = sorted({e for j in jobs for e in j.results.eps})
    path = draw.heatmap(
        _panels(_attacks(jobs), [[(j.results, e) for e in eval_eps] for j in jobs]),
        [job_label(j, keys) for j in jobs], [f"{e:g}" for e in eval_eps], sweep_dir / "sweep_heatmap.png",
        title=f"accuracy (%) per run and eval eps, n = {jobs[0].results.n_images}", xlabel="eval eps",
        ylabel="run (swept overrides)")
    out = {"grid": (path, "Accuracy (%) of every run (rows) at every evaluated eps (columns), one panel per attack.")}
    matched = _matched_heatmap(sweep_dir, jobs, keys) if "eps" in keys else None
    if matched:
        out["matched"] = matched
    return out


def _run_link(job: Job) -> str:
    return f'<a href="{escape(job.name)}/{REPORT}">{escape(job.name)}</a>'


def _runs_table(jobs: list[Job]) -> str:
    eps = sorted({e for j in jobs for e in j.results.eps})
    keys = swept_keys(jobs)
    rows = [[_run_link(job), f"<code>{escape(job_label(job, keys))}</code>", escape(job.results.clean),
             *rate_cells(eps, worst_by_eps(job.results)), checks_summary(job.results.checks)] for job in jobs]
    return table(["run", "overrides", "clean", *eps_header(eps), "checks"], rows, numeric_from=2,
                  groups=[("", 3), ("worst-case accuracy at eval eps", len(eps)), ("", 1)])


def _comparison_table(jobs: list[Job]) -> str:
    attacks, rows = comparison_rows(jobs)
    has_certified = any(r.certified for r in rows)
    cells = [[f'<a href="{escape(r.job)}/{REPORT}">{escape(r.job)}</a>', f"<code>{escape(r.label)}</code>", escape(r.norm),
              escape(f"{r.eps:.4g}"), escape(r.clean), *(escape(r.attacks[a]) if a in r.attacks else "-" for a in attacks),
              f"<b>{escape(r.worst_case)}</b>", *([escape(r.certified) if r.certified else "-"] if has_certified else [])]
             for r in rows]
    return table(["run", "overrides", "norm", "eps", "clean", *attacks, "worst case",
                   *(["certified"] if has_certified else [])], cells, numeric_from=4)


def sweep_report(sweep_dir: str | Path, jobs: list[Job]) -> str:
    """The HTML of a sweep's report (writes its heatmaps; shows the curves of write_sweep_summary)."""
    sweep_dir = Path(sweep_dir)
    # The experiment's name (config `name`), not each run's: in a multirun a run is named by its overrides too.
    names = sorted({str(j.results.config.get("name") or j.results.name or "?") for j in jobs})
    body = [
        f"<h1>Sweep {escape(', '.join(names))}</h1>",
        f'<p class="meta">{escape(sweep_dir)} &middot; {len(jobs)} runs &middot; {escape(jobs[0].results.n_images)} test '
        f"images each &middot; swept: <code>{escape(' '.join(swept_keys(jobs)) or '(nothing)')}</code> &middot; "
        f"shared overrides: <code>{escape(' '.join(shared_overrides(jobs)) or '(none)')}</code></p>",
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every evaluated "
        "attack fails on it. Each run's own report (figures, checks, config) is linked from its number.</p>",
        "<h2>Runs</h2>", _runs_table(jobs), "<h2>Accuracy grids</h2>",
    ]
    heatmaps = sweep_heatmaps(sweep_dir, jobs)
    body += [figure(*heatmaps[k], heatmaps[k][1]) for k in ("matched", "grid") if k in heatmaps]
    caption = "Worst-case accuracy per run vs eval eps, with 95% interval bands."
    body += ["<h2>Worst-case accuracy vs eps</h2>", figure(sweep_dir / "sweep_accuracy_vs_eps.png", caption, caption)]
    body += ["<h2>Per attack</h2>", "<p>Accuracy under each attack at every eval eps > 0, the per-image worst case "
             "over all of them (the robust accuracy), and certified accuracy where the model has a Lipschitz "
             "bound.</p>", _comparison_table(jobs)]
    return page(f"advlab sweep report: {', '.join(names)}", body)


def write_sweep_report(sweep_dir: str | Path, jobs: list[Job]) -> Path:
    """Write sweep_dir/report.html, and the report.html of every run that has none yet."""
    sweep_dir = Path(sweep_dir)
    for job in jobs:
        if not (sweep_dir / job.name / REPORT).is_file():
            write_run_report(sweep_dir / job.name, job.results)
    return write_text(sweep_dir / REPORT, sweep_report(sweep_dir, jobs))


def write_sweep_files(sweep_dir: str | Path) -> bool:
    """The sweep's summary (advlab.sweep), then its HTML reports, printing both paths; False when no job finished."""
    jobs = job_results(sweep_dir)
    if not jobs:
        return False
    print(f"sweep summary: {write_sweep_summary(sweep_dir, jobs)}")
    print(f"sweep report: {write_sweep_report(sweep_dir, jobs)}")
    return True


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks.sweep_summary): a multirun's summary and reports."""

    def on_multirun_end(self, config, **kwargs) -> None:
        write_sweep_files(config.hydra.sweep.dir)
