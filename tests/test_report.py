"""The HTML reports: contents, self-containment, escaping, and rendering in headless Chromium.

The run and sweep folders are written here from synthetic Results (no training), saved as
results.json, with a few small figures drawn once with advlab.figures.draw, copied into every run folder.
"""

import contextlib
import io
import math
import os
import re
import shutil
import subprocess
from dataclasses import replace

import matplotlib.image
import numpy as np
import pytest
import torch

from advlab import report, sweep
from advlab.figures import draw as plots
from advlab.data import CLASS_NAMES
from advlab.results import Check, Curves, Results, Targeted
from advlab.stats import Rate

EPS = [0.0, 0.01, 0.03]
FIGURES = ["accuracy_vs_eps", "targeted_success_vs_eps", "examples_fgsm", "confusion_matrix", "test_images"]
EVIL = "<script>alert('x')</script>"


def rates(successes: list[int], n: int = 50) -> list[Rate]:
    return [Rate(k, n) for k in successes]


def results(name: str, train_eps: float, alpha: float, worst: list[int]) -> Results:
    fgsm = [w + 3 for w in worst]
    fgsm[0] = worst[0]
    return Results(
        name=name,
        seed=0,
        provenance={"checkpoint": "model.pt", "checkpoint_sha256": "ab" * 32,
                    "versions": {"python": "3.11", "torch": "2"}, "commit": None},
        overrides=["+experiment=fgsm_defense", f"eps={train_eps:g}", f"alpha={alpha:g}"],
        training={"seconds": 1.5, "epochs": 1, "alpha": alpha, "eps": train_eps, "val": {"val/acc": 0.5}},
        n_images=50,
        clean=Rate(worst[0], 50),
        confusion=np.eye(10, dtype=int).tolist(),
        robustness=Curves(EPS, {"fgsm": rates(fgsm), "pgd": rates(worst), "worst_case": rates(worst)}),
        perturbed=Curves(EPS, {"fgsm": rates(fgsm)}),
        targeted=Targeted(4, "deer", Curves(EPS, {"pgd": rates([0, 5, 20], 45)})),
        checks=[Check("monotone", "PASS", "robust accuracy never rises"),
                Check("iterative", "WARN", "pgd > fgsm at eps=0.01")],
        figures={k: f"{k}.png" for k in FIGURES},
        config={"name": name, "eps": train_eps, "alpha": alpha, "evaluation": {"eps": EPS}},
    )


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """One small PNG per figure kind, drawn with the functions the runs use."""
    out = tmp_path_factory.mktemp("figures")
    r = results("f", 0.01, 0.0, [40, 30, 10])
    plots.rate_curves(EPS, r.robustness.rates, out / "accuracy_vs_eps.png", "accuracy (%)", "test")
    shutil.copy(out / "accuracy_vs_eps.png", out / "targeted_success_vs_eps.png")
    plots.confusion_matrix(r.row_percent(), CLASS_NAMES, out / "confusion_matrix.png")
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y, conf = torch.tensor([1, 2]), torch.tensor([0.9, 0.6])
    rows = [(0.0, x, y, conf), (0.03, (x + 0.03).clamp(0, 1), torch.tensor([1, 3]), conf)]
    plots.adversarial_examples(rows, y, CLASS_NAMES, out / "examples_fgsm.png", "FGSM")
    plots.image_grid(x, y, CLASS_NAMES, out / "test_images.png", columns=2)
    return out


def make_run(run_dir, figures, **kwargs):
    run_dir.mkdir(parents=True)
    for name in FIGURES:
        shutil.copy(figures / f"{name}.png", run_dir / f"{name}.png")
    results(**kwargs).save(run_dir / "results.json")
    return run_dir


@pytest.fixture(scope="module")
def run_report(tmp_path_factory, figures):
    run_dir = make_run(tmp_path_factory.mktemp("run") / "run", figures,
                       name="fgsm_defense", train_eps=0.01, alpha=0.0, worst=[40, 30, 10])
    return report.write_report(run_dir)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, figures):
    """A 2 x 2 sweep over training eps and alpha, summarised as Hydra's callback does at the end."""
    root = tmp_path_factory.mktemp("sweep")
    grid = [(0.01, 0.0), (0.01, 0.5), (0.03, 0.0), (0.03, 0.5)]
    for job, (train_eps, alpha) in enumerate(grid):
        make_run(root / str(job), figures, name="fgsm_defense", train_eps=train_eps, alpha=alpha,
                 worst=[45 - job, 30 - 2 * job, 10 + job])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert report.write_sweep_files(root)
    (root / "printed.txt").write_text(printed.getvalue())
    return root


def tags(text: str, name: str) -> int:
    return len(re.findall(f"<{name}[ >]", text))


def test_run_report_has_every_table_and_figure(run_report):
    text = run_report.read_text(encoding="utf-8")
    assert run_report.name == "report.html"
    # accuracy, targeted, checks, training, provenance
    assert tags(text, "table") == 5
    assert tags(text, "img") == len(FIGURES)
    for heading in ("Accuracy vs eps", "Targeted success toward deer", "Checks", "Training", "Provenance",
                    "Configuration", "Accuracy under attack vs eps", "Confusion matrix", "Adversarial examples, FGSM"):
        assert heading in text, heading
    r = results("x", 0.01, 0.0, [40, 30, 10])
    assert str(r.clean) in text  # the accuracy table carries the intervals
    assert "95% CI [" in text  # ...and so do the headline cards
    assert 'class="status WARN"' in text and 'class="status PASS"' in text
    assert "<details>" in text and "evaluation:\n  eps:\n  - 0.0" in text  # the config as YAML
    assert "perturbed (fgsm on every image)" in text


def test_reports_are_self_contained(run_report, sweep_dir):
    for path in (run_report, sweep_dir / "report.html", sweep_dir / "0" / "report.html"):
        text = path.read_text(encoding="utf-8")
        sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text)
        assert sources, path
        for source in sources:
            assert not re.match(r"\s*(https?:|//|file:)", source, re.I), (path, source[:80])
        assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'<img src="([^"]*)"', text))
        assert "<link" not in text and tags(text, "script") == 1  # only the report's own few lines


def test_the_report_from_memory_is_the_report_from_results_json(tmp_path, figures):
    run_dir = make_run(tmp_path / "run", figures, name="r", train_eps=0.01, alpha=0.0, worst=[40, 30, 10])
    from_disk = report.write_report(run_dir).read_text(encoding="utf-8")
    path = report.write_run_report(run_dir, results(name="r", train_eps=0.01, alpha=0.0, worst=[40, 30, 10]))
    assert path == run_dir / "report.html" and path.read_text(encoding="utf-8") == from_disk


def test_text_is_escaped(tmp_path, figures):
    run_dir = make_run(tmp_path / "evil", figures, name=EVIL, train_eps=0.01, alpha=0.0, worst=[40, 30, 10])
    text = report.write_report(run_dir).read_text(encoding="utf-8")
    assert EVIL not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert tags(text, "script") == 1


def test_a_missing_figure_is_named_not_broken(tmp_path, figures):
    run_dir = make_run(tmp_path / "run", figures, name="r", train_eps=0.01, alpha=0.0, worst=[40, 30, 10])
    (run_dir / "confusion_matrix.png").unlink()
    text = report.write_report(run_dir).read_text(encoding="utf-8")
    assert "Figure missing: confusion_matrix.png" in text and tags(text, "img") == len(FIGURES) - 1


def test_sweep_report_links_runs_and_shows_the_grids(sweep_dir):
    text = (sweep_dir / "report.html").read_text(encoding="utf-8")
    for job in range(4):
        assert f'<a href="{job}/report.html">' in text
        assert (sweep_dir / str(job) / "report.html").is_file()
    assert tags(text, "table") == 2  # the runs, and the per-attack table
    runs_table, per_attack = text.split("</table>")[:2]
    assert runs_table.count("<tr>") == 2 + 4  # two header rows, a row per run
    assert "<h2>Per attack</h2>" in per_attack and per_attack.count('<a href="3/report.html">') >= 1
    assert tags(text, "img") == 3  # matched grid, full grid, curves
    for png in ("sweep_heatmap.png", "sweep_heatmap_matched.png", "sweep_accuracy_vs_eps.png"):
        assert (sweep_dir / png).stat().st_size > 1000
    assert "swept: <code>eps alpha</code>" in text
    assert str(Rate(30 - 2 * 3, 50)) in text  # job 3's worst case at eps=0.01


def test_sweep_report_is_headed_by_the_experiment_not_by_each_runs_name(tmp_path, figures):
    """In a multirun each run's name carries its overrides too (advlab.cli.run_name, for W&B); the sweep's heading
    is the experiment's name from the runs' config."""
    for job, alpha in enumerate((0.0, 0.5)):
        run = replace(results("fgsm_defense", 0.01, alpha, [40, 30, 10]), name=f"fgsm_defense eps=0.01 alpha={alpha:g}")
        (tmp_path / str(job)).mkdir()
        run.save(tmp_path / str(job) / "results.json")
    with contextlib.redirect_stdout(io.StringIO()):
        text = report.sweep_report(tmp_path, sweep.job_results(tmp_path))
    assert "<h1>Sweep fgsm_defense</h1>" in text and "<title>advlab sweep report: fgsm_defense</title>" in text


def test_runs_are_labelled_by_what_the_sweep_varied():
    run = results("r", 0.01, 0.0, [40, 30, 10])
    jobs = [sweep.Job(str(i), replace(run, overrides=["+experiment=x", "logger=none", f"eps={e}", f"alpha={a}"]))
            for i, (e, a) in enumerate([(0.01, 0), (0.01, 0.5), (0.03, 0)])]
    keys = sweep.swept_keys(jobs)
    assert keys == ["eps", "alpha"]
    assert sweep.shared_overrides(jobs) == ["+experiment=x", "logger=none"]
    assert sweep.job_label(jobs[1], keys) == "eps=0.01 alpha=0.5"
    assert sweep.swept_keys(jobs[:1]) == [] and sweep.job_label(jobs[0]) == "logger=none eps=0.01 alpha=0"


def test_sweep_hook_prints_the_report(sweep_dir):
    printed = (sweep_dir / "printed.txt").read_text()
    assert f"sweep summary: {sweep_dir / 'sweep_summary.md'}" in printed
    assert f"sweep report: {sweep_dir / 'report.html'}" in printed


def test_error_names_the_folder(tmp_path, capsys):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        report.write_report(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path)])
    assert exit_.value.code == 2 and str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_perturbation_is_amplified_around_gray():
    deltas = [torch.full((3, 2, 2), 0.01), torch.full((3, 2, 2), -0.02)]
    images, k = plots._amplified(deltas)
    assert k == pytest.approx(25.0)  # the row's largest |delta| (0.02) maps to 0.5
    assert images[0] == pytest.approx(np.full((2, 2, 3), 0.75)) and images[1] == pytest.approx(np.zeros((2, 2, 3)))
    images, k = plots._amplified([torch.zeros(3, 2, 2)])
    assert k == 0 and images[0] == pytest.approx(np.full((2, 2, 3), 0.5))


def test_adversarial_examples_without_an_original_row(tmp_path):
    x = torch.rand(2, 3, 8, 8)
    rows = [(0.01, x, torch.tensor([0, 1]), torch.tensor([0.5, 0.5]))]
    assert plots.adversarial_examples(rows, [0, 1], CLASS_NAMES, tmp_path / "e.png", "t").stat().st_size > 0
    assert plots.heatmap({"a": [[1.0, math.nan]]}, ["r"], ["c1", "c2"], tmp_path / "h.png", "t", "x", "y").is_file()


# ---------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = "chromium (or chromium-browser) is not installed: apt-get install chromium"
        if os.environ.get("ADVLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (ADVLAB_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return binary


def browse(chromium, tmp_path, *args) -> str:
    out = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow  # headless Chromium
@pytest.mark.parametrize("which", ["run", "sweep"])
def test_every_image_renders_in_chromium(chromium, tmp_path, run_report, sweep_dir, which):
    path = run_report if which == "run" else sweep_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    dom = browse(chromium, tmp_path, "--dump-dom", path.as_uri())
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    images, tables = tags(text, "img"), tags(text, "table")
    assert f'data-images="{images}/{images}"' in body.group(0), body.group(0)
    assert f'data-tables="{tables}"' in body.group(0), body.group(0)


@pytest.mark.slow  # headless Chromium
def test_screenshot_is_not_blank(chromium, tmp_path, sweep_dir):
    shot = tmp_path / "shot.png"
    browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", (sweep_dir / "report.html").as_uri())
    assert shot.stat().st_size > 20_000
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    rgb = (pixels * 255).round().astype(np.int32)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert len(colours) > 100  # text, tables and figures, not one flat colour
