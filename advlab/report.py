"""A self-contained HTML report of a run or of a multirun sweep, rendered from Results objects.

    python -m advlab.report outputs/fgsm_defense/DATE        # a run: writes report.html there
    python -m advlab.report multirun/fgsm_defense/DATE       # a sweep: its summary, its report and every run's

A run writes its report from memory right after it ends (write_run_report); Hydra's callback
SweepSummary (registered in conf/config.yaml) writes a sweep's summary (advlab.sweep) and report
when the multirun ends; the command line reads results.json with Results.load.

One file that opens anywhere, offline, and can be mailed or archived: figures are
embedded as base64 data URIs, the style is inline, nothing is fetched. Every piece
of text from results.json is escaped, so a run name or override cannot inject markup.
A few lines of inline script record, once the page has loaded, how many images
decoded and how many tables there are (body data-images="loaded/total",
data-tables="N"), so a headless browser can check the page really renders.
"""

import argparse
import base64
import html
import json
import math
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from advlab import plots
from advlab.io import write_text
from advlab.results import WORST_CASE, Check, Curves, Results
from advlab.stats import Rate
from advlab.sweep import (Job, comparison_rows, job_label, job_results, parsed_overrides, shared_overrides,
                          swept_keys, write_sweep_summary)

REPORT = "report.html"

# Headings of a run's figures; examples_* and unknown keys get theirs from the key.
FIGURES = {
    "accuracy_vs_eps": "Accuracy under attack vs eps",
    "time_to_robustness": "Time to robustness: clean and robust accuracy against training wall time",
    "targeted_success_vs_eps": "Targeted success vs eps",
    "convergence": "Attack convergence: loss and margin per iteration, one image's path through the eps-ball",
    "confusion_matrix": "Confusion matrix (clean test images)",
    "test_images": "Test images",
}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1400px;
       margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; } code { background: #f3f3f3; padding: 0 0.25em; border-radius: 3px; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; font-size: 13px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .big { font-size: 1.5em; font-weight: 600; } .card .ci { color: #666; font-size: 0.9em; }
.status { font-weight: 600; padding: 0.05em 0.5em; border-radius: 3px; }
.PASS { background: #dff3e0; color: #1b5e20; } .WARN { background: #fff0cc; color: #8a5300; }
.SKIP { background: #eee; color: #555; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; margin-top: 0.3em; } .missing { color: #b00020; }
.scroll { overflow-x: auto; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
"""

# Records, for humans and for the headless-browser test, that every image decoded.
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.images = loaded + "/" + images.length;
  document.body.dataset.tables = String(document.querySelectorAll("table").length);
});
"""


def _e(value) -> str:
    return html.escape(str(value))


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        *body, f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1, groups: list[tuple[str, int]] = ()) -> str:
    """Cells are HTML already (escape before); columns from `numeric_from` on are right-aligned.
    groups: an optional header row above, (html, columns spanned) per cell."""
    head = "".join(f"<th>{h}</th>" for h in header)
    if groups:
        head = "".join(f'<th colspan="{n}">{h}</th>' for h, n in groups) + f"</tr><tr>{head}"
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(path: Path, alt: str, caption: str = "") -> str:
    """The PNG embedded as a data URI; a visible note instead of a broken image when the file is missing."""
    if not path.is_file():
        return f'<p class="missing">Figure missing: {_e(path.name)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">{caption}</figure>'


def _eps_header(eps: list[float]) -> list[str]:
    return [f"eps={_e(f'{e:g}')}" for e in eps]


def _rate_cells(eps: list[float], by_eps: dict[float, Rate]) -> list[str]:
    return [_e(by_eps[e]) if e in by_eps else "-" for e in eps]


def _flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, text) rows; numbers kept short."""
    rows = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            rows += _flat(value, f"{prefix}{key}.")
        else:
            if isinstance(value, float):
                text = f"{value:.4g}"
            else:
                text = value if isinstance(value, str) else json.dumps(value)
            rows.append((f"{prefix}{key}", text))
    return rows


def _kv_table(d: dict) -> str:
    return _table(["", "value"], [[_e(k), f"<code>{_e(v)}</code>"] for k, v in _flat(d)], numeric_from=99)


def _status(status: str, text: str) -> str:
    return f'<span class="status {_e(status)}">{_e(text)}</span>'


def _checks_summary(checks: list[Check]) -> str:
    counts = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    return " ".join(_status(s, f"{n} {s}") for s, n in sorted(counts.items()))


# ---------------------------------------------------------------- a run


def _card(label: str, rate: Rate) -> str:
    low, high = rate.ci95
    return (f'<div class="card">{_e(label)}<div class="big">{100 * rate.value:.1f}%</div>'
            f'<div class="ci">95% CI [{100 * low:.1f}, {100 * high:.1f}], n = {rate.n}</div></div>')


def _worst_by_eps(results: Results) -> dict[float, Rate]:
    return results.robustness.by_eps(WORST_CASE) if WORST_CASE in results.robustness.rates else {}


def _headline(results: Results) -> str:
    """Clean accuracy and the worst case at every eps > 0, big."""
    cards = [_card("clean accuracy", results.clean)]
    cards += [_card(f"worst case, eps={e:g}", rate) for e, rate in _worst_by_eps(results).items() if e > 0]
    return f'<div class="cards">{"".join(cards)}</div>'


def _curve_rows(curves: Curves, eps: list[float], label=lambda name: name) -> list[list[str]]:
    return [[_e(label(name)), *_rate_cells(eps, curves.by_eps(name))] for name in curves.rates]


def _accuracy_table(results: Results) -> str:
    rows = _curve_rows(results.robustness, results.eps, lambda name: name.replace("_", " "))
    if results.perturbed:
        rows += _curve_rows(results.perturbed, results.eps, lambda name: f"perturbed ({name} on every image)")
    return _table(["attack", *_eps_header(results.eps)], rows)


def _targeted_table(curves: Curves) -> str:
    return _table(["attack", *_eps_header(curves.eps)], _curve_rows(curves, curves.eps))


def _checks_table(checks: list[Check]) -> str:
    return _table(["check", "status", "detail"],
                  [[_e(c.name), _status(c.status, c.status), _e(c.detail)] for c in checks], numeric_from=99)


def _run_figures(run_dir: Path, figures: dict[str, str]) -> list[str]:
    """Curves first, then the attacked images, the confusion matrix, the test images, anything else."""
    examples = sorted(k for k in figures if k.startswith("examples_"))
    order = ["accuracy_vs_eps", "time_to_robustness", "targeted_success_vs_eps", "convergence", *examples, "confusion_matrix",
             "test_images"]
    keys = [k for k in order if k in figures] + [k for k in figures if k not in order]
    out = []
    for key in keys:
        heading = FIGURES.get(key) or (f"Adversarial examples, {key.removeprefix('examples_').upper()}: prediction "
                                       "and confidence per eps, with the perturbation amplified"
                                       if key.startswith("examples_") else key.replace("_", " "))
        # Only the file name: results.json cannot point the report at a file outside the run folder.
        out += [f"<h3>{_e(heading)}</h3>", _figure(run_dir / Path(figures[key]).name, heading)]
    return out


def _run_meta(run_dir: Path, results: Results) -> str:
    overrides = " ".join(results.overrides) or "(none)"
    checks = f" &middot; checks {_checks_summary(results.checks)}" if results.checks else ""
    return (f'<p class="meta">{_e(run_dir)} &middot; seed {_e(results.seed)} &middot; {_e(results.n_images)} test '
            f"images &middot; overrides <code>{_e(overrides)}</code>{checks}</p>")


def _run_details(results: Results) -> list[str]:
    """Training, provenance, evaluation time and the resolved config, where the run recorded them."""
    body = []
    if results.training:
        body += ["<h2>Training</h2>", _kv_table(results.training)]
    if results.provenance:
        body += ["<h2>Provenance</h2>", _kv_table(results.provenance)]
    if results.evaluation_seconds is not None:
        body.append(f'<p class="meta">evaluation took {_e(results.evaluation_seconds)} s</p>')
    if results.config:
        body += ["<h2>Configuration</h2>", "<details><summary>the resolved config (YAML)</summary>"
                 f"<pre>{_e(OmegaConf.to_yaml(OmegaConf.create(results.config)))}</pre></details>"]
    return body


def run_report(run_dir: str | Path, results: Results) -> str:
    """The HTML of one run's report, from its results and the figures (results.figures) in run_dir."""
    run_dir = Path(run_dir)
    name = results.name or run_dir.name
    body = [
        f"<h1>{_e(name)}</h1>", _run_meta(run_dir, results), _headline(results),
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every "
        "evaluated attack fails on it.</p>",
        "<h2>Accuracy vs eps</h2>", _accuracy_table(results),
    ]
    if results.targeted:
        t = results.targeted
        body += [f"<h2>Targeted success toward {_e(t.target_name or t.target)}</h2>",
                 "<p>Over the images whose true class is not the target.</p>", _targeted_table(t.success)]
    if results.checks:
        body += ["<h2>Checks</h2>", "<p>A WARN says a number may be an artefact of the attack "
                 "(weak or masked gradients), not robustness.</p>", _checks_table(results.checks)]
    if results.notes:
        body += ["<h2>Notes</h2>", "<ul>", *(f"<li>{_e(note)}</li>" for note in results.notes), "</ul>"]
    body += ["<h2>Figures</h2>", *_run_figures(run_dir, results.figures), *_run_details(results)]
    return _page(f"advlab report: {name}", body)


def write_run_report(run_dir: str | Path, results: Results) -> Path:
    """Write run_dir/report.html from the run's results (in memory: nothing is read but the figures)."""
    return write_text(Path(run_dir) / REPORT, run_report(run_dir, results))


# ---------------------------------------------------------------- a sweep


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
    path = plots.heatmap(panels, rows, [f"{e:g}" for e in train_eps], sweep_dir / "sweep_heatmap_matched.png",
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
    path = plots.heatmap(
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
    return f'<a href="{_e(job.name)}/{REPORT}">{_e(job.name)}</a>'


def _runs_table(jobs: list[Job]) -> str:
    eps = sorted({e for j in jobs for e in j.results.eps})
    keys = swept_keys(jobs)
    rows = [[_run_link(job), f"<code>{_e(job_label(job, keys))}</code>", _e(job.results.clean),
             *_rate_cells(eps, _worst_by_eps(job.results)), _checks_summary(job.results.checks)] for job in jobs]
    return _table(["run", "overrides", "clean", *_eps_header(eps), "checks"], rows, numeric_from=2,
                  groups=[("", 3), ("worst-case accuracy at eval eps", len(eps)), ("", 1)])


def _comparison_table(jobs: list[Job]) -> str:
    attacks, rows = comparison_rows(jobs)
    has_certified = any(r.certified for r in rows)
    cells = [[f'<a href="{_e(r.job)}/{REPORT}">{_e(r.job)}</a>', f"<code>{_e(r.label)}</code>", _e(r.norm),
              _e(f"{r.eps:.4g}"), _e(r.clean), *(_e(r.attacks[a]) if a in r.attacks else "-" for a in attacks),
              f"<b>{_e(r.worst_case)}</b>", *([_e(r.certified) if r.certified else "-"] if has_certified else [])]
             for r in rows]
    return _table(["run", "overrides", "norm", "eps", "clean", *attacks, "worst case",
                   *(["certified"] if has_certified else [])], cells, numeric_from=4)


def sweep_report(sweep_dir: str | Path, jobs: list[Job]) -> str:
    """The HTML of a sweep's report (writes its heatmaps; shows the curves of write_sweep_summary)."""
    sweep_dir = Path(sweep_dir)
    # The experiment's name (config `name`), not each run's: in a multirun a run is named by its overrides too.
    names = sorted({str(j.results.config.get("name") or j.results.name or "?") for j in jobs})
    body = [
        f"<h1>Sweep {_e(', '.join(names))}</h1>",
        f'<p class="meta">{_e(sweep_dir)} &middot; {len(jobs)} runs &middot; {_e(jobs[0].results.n_images)} test '
        f"images each &middot; swept: <code>{_e(' '.join(swept_keys(jobs)) or '(nothing)')}</code> &middot; "
        f"shared overrides: <code>{_e(' '.join(shared_overrides(jobs)) or '(none)')}</code></p>",
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every evaluated "
        "attack fails on it. Each run's own report (figures, checks, config) is linked from its number.</p>",
        "<h2>Runs</h2>", _runs_table(jobs), "<h2>Accuracy grids</h2>",
    ]
    heatmaps = sweep_heatmaps(sweep_dir, jobs)
    body += [_figure(*heatmaps[k], heatmaps[k][1]) for k in ("matched", "grid") if k in heatmaps]
    caption = "Worst-case accuracy per run vs eval eps, with 95% interval bands."
    body += ["<h2>Worst-case accuracy vs eps</h2>", _figure(sweep_dir / "sweep_accuracy_vs_eps.png", caption, caption)]
    body += ["<h2>Per attack</h2>", "<p>Accuracy under each attack at every eval eps > 0, the per-image worst case "
             "over all of them (the robust accuracy), and certified accuracy where the model has a Lipschitz "
             "bound.</p>", _comparison_table(jobs)]
    return _page(f"advlab sweep report: {', '.join(names)}", body)


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


# ---------------------------------------------------------------- the command line


def write_report(path: str | Path) -> Path:
    """From results.json on disk: report.html of a run folder (holds results.json), or of a sweep folder (holds
    */results.json) with its summary files and any missing run report. Returns the report's path."""
    path = Path(path)
    if (path / "results.json").is_file():
        return write_run_report(path, Results.load(path / "results.json"))
    jobs = job_results(path)
    if not jobs:
        raise ValueError(f"{path}: neither a run folder (results.json) nor a sweep folder (*/results.json)")
    write_sweep_summary(path, jobs)
    return write_sweep_report(path, jobs)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m advlab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a run folder (with results.json) or a sweep folder (with */results.json)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.path)
    except ValueError as error:
        parser.error(str(error))
    print(out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
