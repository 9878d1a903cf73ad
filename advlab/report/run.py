"""The HTML report of one run (report.html in its folder), rendered from its Results and figure files."""

from pathlib import Path

from omegaconf import OmegaConf

from advlab.io import write_text
from advlab.report.page import (REPORT, card, checks_summary, escape, eps_header, figure, kv_table, page,
                                rate_cells, status, table, worst_by_eps)
from advlab.results import Check, Curves, Results

FIGURES = {
    "accuracy_vs_eps": "Accuracy under attack vs eps",
    "time_to_robustness": "Time to robustness: clean and robust accuracy against training wall time",
    "robust_by_class": "Robust accuracy per class (the per-image worst case)",
    "gallery": "Images no attack broke, and images only the strongest attack broke",
    "min_norm_distances": "Distances to the decision boundary (minimum-norm attacks)",
    "targeted_success_vs_eps": "Targeted success vs eps",
    "convergence": "Attack convergence: loss and margin per iteration, one image's path through the eps-ball",
    "confusion_matrix": "Confusion matrix (clean test images)",
    "test_images": "Test images",
}


def _headline(results: Results) -> str:
    """Clean accuracy and the worst case at every eps > 0, big."""
    cards = [card("clean accuracy", results.clean)]
    cards += [card(f"worst case, eps={e:g}", rate) for e, rate in worst_by_eps(results).items() if e > 0]
    return f'<div class="cards">{"".join(cards)}</div>'


def _curve_rows(curves: Curves, eps: list[float], label=lambda name: name) -> list[list[str]]:
    return [[escape(label(name)), *rate_cells(eps, curves.by_eps(name))] for name in curves.rates]


def _accuracy_table(results: Results) -> str:
    rows = _curve_rows(results.robustness, results.eps, lambda name: name.replace("_", " "))
    if results.perturbed:
        rows += _curve_rows(results.perturbed, results.eps, lambda name: f"perturbed ({name} on every image)")
    return table(["attack", *eps_header(results.eps)], rows)


def _targeted_table(curves: Curves) -> str:
    return table(["attack", *eps_header(curves.eps)], _curve_rows(curves, curves.eps))


def _checks_table(checks: list[Check]) -> str:
    return table(["check", "status", "detail"],
                  [[escape(c.name), status(c.status, c.status), escape(c.detail)] for c in checks], numeric_from=99)


def _run_figures(run_dir: Path, figures: dict[str, str]) -> list[str]:
    """Curves first, then the attacked images, the confusion matrix, the test images, anything else."""
    examples = sorted(k for k in figures if k.startswith("examples_"))
    order = ["accuracy_vs_eps", "time_to_robustness", "robust_by_class", "gallery", "min_norm_distances",
             "targeted_success_vs_eps", "convergence", *examples, "confusion_matrix",
             "test_images"]
    keys = [k for k in order if k in figures] + [k for k in figures if k not in order]
    out = []
    for key in keys:
        heading = FIGURES.get(key) or (f"Adversarial examples, {key.removeprefix('examples_').upper()}: prediction "
                                       "and confidence per eps, with the perturbation amplified"
                                       if key.startswith("examples_") else key.replace("_", " "))
        # Only the file name: results.json cannot point the report at a file outside the run folder.
        out += [f"<h3>{escape(heading)}</h3>", figure(run_dir / Path(figures[key]).name, heading)]
    return out


def _run_meta(run_dir: Path, results: Results) -> str:
    overrides = " ".join(results.overrides) or "(none)"
    checks = f" &middot; checks {checks_summary(results.checks)}" if results.checks else ""
    return (f'<p class="meta">{escape(run_dir)} &middot; seed {escape(results.seed)} &middot; {escape(results.n_images)} test '
            f"images &middot; overrides <code>{escape(overrides)}</code>{checks}</p>")


def _run_details(results: Results) -> list[str]:
    """Training, provenance, evaluation time and the resolved config, where the run recorded them."""
    body = []
    if results.training:
        body += ["<h2>Training</h2>", kv_table(results.training)]
    if results.provenance:
        body += ["<h2>Provenance</h2>", kv_table(results.provenance)]
    if results.evaluation_seconds is not None:
        body.append(f'<p class="meta">evaluation took {escape(results.evaluation_seconds)} s</p>')
    if results.config:
        body += ["<h2>Configuration</h2>", "<details><summary>the resolved config (YAML)</summary>"
                 f"<pre>{escape(OmegaConf.to_yaml(OmegaConf.create(results.config)))}</pre></details>"]
    return body


def run_report(run_dir: str | Path, results: Results) -> str:
    """The HTML of one run's report, from its results and the figures (results.figures) in run_dir."""
    run_dir = Path(run_dir)
    name = results.name or run_dir.name
    body = [
        f"<h1>{escape(name)}</h1>", _run_meta(run_dir, results), _headline(results),
        "<p>Accuracies with 95% Wilson intervals. Worst case: an image counts as robust only if every "
        "evaluated attack fails on it.</p>",
        "<h2>Accuracy vs eps</h2>", _accuracy_table(results),
    ]
    if results.targeted:
        t = results.targeted
        body += [f"<h2>Targeted success toward {escape(t.target_name or t.target)}</h2>",
                 "<p>Over the images whose true class is not the target.</p>", _targeted_table(t.success)]
    if results.checks:
        body += ["<h2>Checks</h2>", "<p>A WARN says a number may be an artefact of the attack "
                 "(weak or masked gradients), not robustness.</p>", _checks_table(results.checks)]
    if results.notes:
        body += ["<h2>Notes</h2>", "<ul>", *(f"<li>{escape(note)}</li>" for note in results.notes), "</ul>"]
    body += ["<h2>Figures</h2>", *_run_figures(run_dir, results.figures), *_run_details(results)]
    return page(f"advlab report: {name}", body)


def write_run_report(run_dir: str | Path, results: Results) -> Path:
    """Write run_dir/report.html from the run's results (in memory: nothing is read but the figures)."""
    return write_text(Path(run_dir) / REPORT, run_report(run_dir, results))
