"""A self-contained HTML report of a run or of a multirun sweep.

    python -m advlab.report outputs/fgsm_defense/DATE        # a run: writes report.html there
    python -m advlab.report multirun/fgsm_defense/DATE       # a sweep: its report and every run's

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

from omegaconf import OmegaConf

from advlab import plots
from advlab.evaluation.stats import Rate, format_rate
from advlab.io import write_text
from advlab.sweep import (comparison_rows, job_label, job_results, parsed_overrides, shared_overrides, swept_keys,
                          write_sweep_summary)

REPORT = "report.html"

# Headings of a run's figures; examples_* and unknown keys get theirs from the key.
FIGURES = {
    "accuracy_vs_eps": "Accuracy under attack vs eps",
    "targeted_success_vs_eps": "Targeted success vs eps",
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


def _rate_cells(eps: list[float], by_eps: dict) -> list[str]:
    return [_e(format_rate(by_eps[e])) if e in by_eps else "-" for e in eps]


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


def _checks_summary(checks: list[dict]) -> str:
    counts = {}
    for check in checks:
        counts[check["status"]] = counts.get(check["status"], 0) + 1
    return " ".join(f'<span class="status {_e(s)}">{n} {_e(s)}</span>' for s, n in sorted(counts.items()))


# ---------------------------------------------------------------- a run


def _card(label: str, rate: dict) -> str:
    low, high = Rate(rate["successes"], rate["n"]).ci95
    return (f'<div class="card">{_e(label)}<div class="big">{100 * rate["value"]:.1f}%</div>'
            f'<div class="ci">95% CI [{100 * low:.1f}, {100 * high:.1f}], n = {rate["n"]}</div></div>')


def _headline(results: dict) -> str:
    """Clean accuracy and the worst case at every eps > 0, big."""
    rob = results["robustness"]
    cards = [_card("clean accuracy", results["clean"])]
    cards += [_card(f"worst case, eps={e:g}", rate)
              for e, rate in zip(rob["eps"], rob["accuracy"].get("worst_case", [])) if e > 0]
    return f'<div class="cards">{"".join(cards)}</div>'


def _accuracy_table(results: dict) -> str:
    rob = results["robustness"]
    eps = rob["eps"]
    rows = [[_e(name.replace("_", " ")), *_rate_cells(eps, dict(zip(eps, rates)))]
            for name, rates in rob["accuracy"].items()]
    if "perturbed" in results:
        p = results["perturbed"]
        rows.append([f"perturbed ({_e(p['attack'])} on every image)",
                     *_rate_cells(eps, dict(zip(p["eps"], p["accuracy"])))])
    return _table(["attack", *_eps_header(eps)], rows)


def _targeted_table(targeted: dict) -> str:
    eps = targeted["eps"]
    rows = [[_e(name), *_rate_cells(eps, dict(zip(eps, rates)))] for name, rates in targeted["success"].items()]
    return _table(["attack", *_eps_header(eps)], rows)


def _checks_table(checks: list[dict]) -> str:
    return _table(["check", "status", "detail"],
                  [[_e(c["name"]), f'<span class="status {_e(c["status"])}">{_e(c["status"])}</span>', _e(c["detail"])]
                   for c in checks], numeric_from=99)


def _run_figures(run_dir: Path, figures: dict) -> list[str]:
    """Curves first, then the attacked images, the confusion matrix, the test images, anything else."""
    examples = sorted(k for k in figures if k.startswith("examples_"))
    order = ["accuracy_vs_eps", "targeted_success_vs_eps", *examples, "confusion_matrix", "test_images"]
    keys = [k for k in order if k in figures] + [k for k in figures if k not in order]
    out = []
    for key in keys:
        heading = FIGURES.get(key) or (f"Adversarial examples, {key.removeprefix('examples_').upper()}: prediction "
                                       "and confidence per eps, with the perturbation amplified"
                                       if key.startswith("examples_") else key.replace("_", " "))
        # Only the file name: results.json cannot point the report at a file outside the run folder.
        out += [f"<h3>{_e(heading)}</h3>", _figure(run_dir / Path(figures[key]).name, heading)]
    return out


def run_report(run_dir: Path) -> str:
    """The HTML of one run's report, from run_dir/results.json and the figures beside it."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    name = results.get("name", run_dir.name)
    overrides = " ".join(results.get("overrides", [])) or "(none)"
    checks = results.get("checks", [])
    body = [
        f"<h1>{_e(name)}</h1>",
        f'<p class="meta">{_e(run_dir)} &middot; seed {_e(results.get("seed"))} &middot; '
        f'{_e(results["n_images"])} test images &middot; overrides <code>{_e(overrides)}</code>'
        + (f" &middot; checks {_checks_summary(checks)}" if checks else "") + "</p>",
        _headline(results),
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every "
        "evaluated attack fails on it.</p>",
        "<h2>Accuracy vs eps</h2>", _accuracy_table(results),
    ]
    if "targeted" in results:
        tgt = results["targeted"]
        body += [f"<h2>Targeted success toward {_e(tgt.get('target_name', tgt['target']))}</h2>",
                 "<p>Over the images whose true class is not the target.</p>", _targeted_table(tgt)]
    if checks:
        body += ["<h2>Checks</h2>", "<p>A WARN says a number may be an artefact of the attack "
                 "(weak or masked gradients), not robustness.</p>", _checks_table(checks)]
    body += ["<h2>Figures</h2>", *_run_figures(run_dir, results.get("figures", {}))]
    if results.get("training"):
        body += ["<h2>Training</h2>", _kv_table(results["training"])]
    if results.get("provenance"):
        body += ["<h2>Provenance</h2>", _kv_table(results["provenance"])]
    if "evaluation_seconds" in results:
        body.append(f'<p class="meta">evaluation took {_e(results["evaluation_seconds"])} s</p>')
    if results.get("config"):
        body += ["<h2>Configuration</h2>", "<details><summary>the resolved config (YAML)</summary>"
                 f"<pre>{_e(OmegaConf.to_yaml(OmegaConf.create(results['config'])))}</pre></details>"]
    return _page(f"advlab report: {name}", body)


# ---------------------------------------------------------------- a sweep


def _at(job: dict, attack: str, e: float) -> float:
    """Accuracy (%) of `attack` at eval eps e, NaN when this job did not evaluate it."""
    rob = job["robustness"]
    for eps, rate in zip(rob["eps"], rob["accuracy"].get(attack, [])):
        if math.isclose(eps, e, rel_tol=1e-9, abs_tol=1e-12):
            return 100 * rate["value"]
    return math.nan


def _train_eps(job: dict) -> float:
    return float(job.get("config", {}).get("eps", parsed_overrides(job).get("eps", "nan")))


def _attacks(jobs: list[dict]) -> list[str]:
    return list(dict.fromkeys(a for j in jobs for a in j["robustness"]["accuracy"]))


def sweep_heatmaps(sweep_dir: Path, jobs: list[dict]) -> dict[str, tuple[Path, str]]:
    """The sweep's accuracy grids, one panel per attack: {key: (png, caption)}.

    "grid": a row per job (labelled by its swept overrides), a column per eval eps.
    "matched" (when the training eps itself is swept): rows are the other swept overrides
    (e.g. alpha), columns the training eps, each cell the model trained at that eps
    evaluated at that same eps -- the eps x alpha x attack grid of adversarial training.
    """
    keys = swept_keys(jobs)
    attacks = _attacks(jobs)
    eval_eps = sorted({e for j in jobs for e in j["robustness"]["eps"]})
    out = {}
    path = plots.heatmap(
        {a.replace("_", " "): [[_at(j, a, e) for e in eval_eps] for j in jobs] for a in attacks},
        [job_label(j, keys) for j in jobs], [f"{e:g}" for e in eval_eps], sweep_dir / "sweep_heatmap.png",
        title=f"accuracy (%) per run and eval eps, n = {jobs[0]['n_images']}", xlabel="eval eps",
        ylabel="run (swept overrides)")
    out["grid"] = (path, "Accuracy (%) of every run (rows) at every evaluated eps (columns), one panel per attack.")
    others = [k for k in keys if k != "eps"]
    if "eps" in keys:
        train_eps = sorted({_train_eps(j) for j in jobs})
        row_of = {j["job"]: job_label(j, others) if others else "all" for j in jobs}
        rows = list(dict.fromkeys(row_of.values()))
        cell = {(row_of[j["job"]], _train_eps(j)): j for j in jobs}
        panels = {a.replace("_", " "): [[_at(cell[r, e], a, e) if (r, e) in cell else math.nan for e in train_eps]
                                        for r in rows] for a in attacks}
        if any(math.isfinite(v) for grid in panels.values() for row in grid for v in row):
            path = plots.heatmap(panels, rows, [f"{e:g}" for e in train_eps], sweep_dir / "sweep_heatmap_matched.png",
                                 title="accuracy (%) of each model at its own training eps",
                                 xlabel="training eps = eval eps",
                                 ylabel=" ".join(others) or "")
            out["matched"] = (path, "Each model evaluated at the eps it was trained with: rows are the other swept "
                                    "overrides, columns the training eps, one panel per attack.")
    return out


def _runs_table(jobs: list[dict]) -> str:
    eps = sorted({e for j in jobs for e in j["robustness"]["eps"]})
    keys = swept_keys(jobs)
    rows = []
    for job in jobs:
        link = f'<a href="{_e(job["job"])}/{REPORT}">{_e(job["job"])}</a>'
        rob = job["robustness"]
        worst = dict(zip(rob["eps"], rob["accuracy"].get("worst_case", [])))
        rows.append([link, f"<code>{_e(job_label(job, keys))}</code>", _e(format_rate(job["clean"])),
                     *_rate_cells(eps, worst), _checks_summary(job.get("checks", []))])
    return _table(["run", "overrides", "clean", *_eps_header(eps), "checks"], rows, numeric_from=2,
                  groups=[("", 3), ("worst-case accuracy at eval eps", len(eps)), ("", 1)])


def _comparison_table(jobs: list[dict]) -> str:
    attacks, rows = comparison_rows(jobs)
    has_certified = any(r["certified"] for r in rows)
    cells = []
    for r in rows:
        cells.append([f'<a href="{_e(r["job"])}/{REPORT}">{_e(r["job"])}</a>', f"<code>{_e(r['label'])}</code>",
                      _e(r["norm"]), _e(f"{r['eps']:.4g}"), _e(format_rate(r["clean"])),
                      *(_e(format_rate(r["attacks"][a])) if a in r["attacks"] else "-" for a in attacks),
                      f"<b>{_e(format_rate(r['worst_case']))}</b>",
                      *([_e(format_rate(r["certified"])) if r["certified"] else "-"] if has_certified else [])])
    return _table(["run", "overrides", "norm", "eps", "clean", *attacks, "worst case",
                   *(["certified"] if has_certified else [])], cells, numeric_from=4)


def sweep_report(sweep_dir: Path) -> str:
    """The HTML of a sweep's report; writes the heatmaps, the sweep summary and any missing run report."""
    jobs = job_results(sweep_dir)
    for job in jobs:
        if not (sweep_dir / job["job"] / REPORT).is_file():
            write_report(sweep_dir / job["job"])
    curves = sweep_dir / "sweep_accuracy_vs_eps.png"
    if not curves.is_file():
        write_sweep_summary(sweep_dir)
    names = sorted({j.get("name", "?") for j in jobs})
    body = [
        f"<h1>Sweep {_e(', '.join(names))}</h1>",
        f'<p class="meta">{_e(sweep_dir)} &middot; {len(jobs)} runs &middot; {_e(jobs[0]["n_images"])} test images '
        f"each &middot; swept: <code>{_e(' '.join(swept_keys(jobs)) or '(nothing)')}</code> &middot; shared "
        f"overrides: <code>{_e(' '.join(shared_overrides(jobs)) or '(none)')}</code></p>",
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every evaluated "
        "attack fails on it. Each run's own report (figures, checks, config) is linked from its number.</p>",
        "<h2>Runs</h2>", _runs_table(jobs), "<h2>Accuracy grids</h2>",
    ]
    heatmaps = sweep_heatmaps(sweep_dir, jobs)
    body += [_figure(*heatmaps[k], heatmaps[k][1]) for k in ("matched", "grid") if k in heatmaps]
    caption = "Worst-case accuracy per run vs eval eps, with 95% interval bands."
    body += ["<h2>Worst-case accuracy vs eps</h2>", _figure(curves, caption, caption)]
    body += ["<h2>Per attack</h2>", "<p>Accuracy under each attack at every eval eps > 0, the per-image worst case "
             "over all of them (the robust accuracy), and certified accuracy where the model has a Lipschitz "
             "bound.</p>", _comparison_table(jobs)]
    return _page(f"advlab sweep report: {', '.join(names)}", body)


def write_report(path: str | Path) -> Path:
    """Write report.html into a run folder (holds results.json) or a sweep folder (holds */results.json)."""
    path = Path(path)
    if (path / "results.json").is_file():
        return write_text(path / REPORT, run_report(path))
    if any(path.glob("*/results.json")):
        return write_text(path / REPORT, sweep_report(path))
    raise ValueError(f"{path}: neither a run folder (results.json) nor a sweep folder (*/results.json)")


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
