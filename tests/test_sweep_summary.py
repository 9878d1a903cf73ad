"""A sweep's summary files from its jobs' Results, `python -m advlab.sweep` and `python -m advlab.report` on a
sweep folder, and the direction of the imports (advlab.report builds on advlab.sweep, never the reverse)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from advlab import report, sweep
from advlab.results import Certified, Curves, Results
from advlab.stats import Rate

REPO = Path(__file__).resolve().parents[1]
EPS = [0.0, 0.5, 1.0]


def job_results(eps: float, worst: list[int], certified: list[int] | None = None) -> Results:
    """An L2 run trained at `eps`; with `certified`, a Lipschitz model with certified accuracy per eps."""
    return Results(
        n_images=20, clean=Rate(worst[0], 20), confusion=[[1, 0], [0, 1]],
        robustness=Curves(EPS, {"pgd": [Rate(k + 1, 20) for k in worst], "worst_case": [Rate(k, 20) for k in worst]}),
        certified=Certified(2.0, EPS, [Rate(k, 20) for k in certified]) if certified else None,
        name="l2_sweep", seed=0, overrides=["+experiment=x", f"eps={eps:g}"],
        config={"eps": eps, "evaluation": {"norm": "l2", "eps": EPS}})


def make_sweep(root: Path) -> list[sweep.Job]:
    # job 10 after job 2: job order is numeric
    for job, (eps, worst, certified) in {"2": (0.5, [15, 10, 5], [15, 8, 2]), "10": (1.0, [12, 9, 7], None)}.items():
        job_results(eps, worst, certified).save(root / job / "results.json")
    return sweep.job_results(root)


def test_jobs_are_results_in_job_order(tmp_path):
    jobs = make_sweep(tmp_path)
    assert [j.name for j in jobs] == ["2", "10"] and all(isinstance(j.results, Results) for j in jobs)
    name, results = jobs[0]  # a (job name, Results) pair
    assert name == "2" and results.worst_case(0.5) == Rate(10, 20)
    assert sweep.job_results(tmp_path / "empty") == [] and sweep.write_sweep_summary(tmp_path / "empty") is None


def test_comparison_rows_per_run_and_eval_eps(tmp_path):
    attacks, rows = sweep.comparison_rows(make_sweep(tmp_path))
    assert attacks == ["pgd"]
    assert [(r.job, r.label, r.eps) for r in rows] == [("2", "eps=0.5", 0.5), ("2", "eps=0.5", 1.0),
                                                      ("10", "eps=1", 0.5), ("10", "eps=1", 1.0)]
    first = rows[0]
    assert (first.norm, first.clean, first.attacks, first.worst_case, first.certified) == (
        "l2", Rate(15, 20), {"pgd": Rate(11, 20)}, Rate(10, 20), Rate(8, 20))
    assert rows[2].certified is None


def test_the_summary_files(tmp_path):
    jobs = make_sweep(tmp_path)
    md = sweep.write_sweep_summary(tmp_path, jobs).read_text()
    assert "2 runs, 20 test images each" in md and "Overrides shared by every run: `+experiment=x`" in md
    assert f"| 2 | eps=0.5 | {Rate(15, 20)} | {Rate(15, 20)} | {Rate(10, 20)} | {Rate(5, 20)} |" in md
    assert "| run | norm | eps | clean | pgd | worst case | certified |" in md
    assert f"| eps=0.5 | l2 | 1 | {Rate(15, 20)} | {Rate(6, 20)} | **{Rate(5, 20)}** | {Rate(2, 20)} |" in md
    assert f"| eps=1 | l2 | 0.5 | {Rate(12, 20)} | {Rate(10, 20)} | **{Rate(9, 20)}** | - |" in md
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert [s["job"] for s in summary] == ["2", "10"]
    assert summary[0] == {"job": "2", "overrides": ["+experiment=x", "eps=0.5"], "clean": Rate(15, 20).to_dict(),
                          "robustness": jobs[0].results.robustness.to_dict("accuracy"),
                          "certified": jobs[0].results.certified.to_dict()}
    assert "certified" not in summary[1]
    assert (tmp_path / "sweep_accuracy_vs_eps.png").stat().st_size > 1000


@pytest.mark.slow  # a multirun in a subprocess
def test_sweep_command_writes_the_summary_only(tmp_path):
    make_sweep(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "advlab.sweep", str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sweep summary: {tmp_path / 'sweep_summary.md'}" in proc.stdout
    for name in ("sweep_summary.md", "sweep_summary.json", "sweep_accuracy_vs_eps.png"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.rglob("report.html"))


def test_report_command_on_a_sweep_writes_summary_and_reports(tmp_path, capsys):
    make_sweep(tmp_path)
    assert report.main([str(tmp_path)]) == tmp_path / "report.html"
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    for name in ("sweep_summary.md", "sweep_summary.json", "sweep_accuracy_vs_eps.png", "2/report.html",
                 "10/report.html"):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Figure missing" not in text and "<th>certified</th>" in text


@pytest.mark.slow  # a fresh interpreter (subprocess)
def test_sweep_does_not_import_report():
    code = "import sys, advlab.sweep; sys.exit('advlab.report' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_hydra_callback_is_the_reports():
    target = OmegaConf.load(REPO / "conf" / "config.yaml").hydra.callbacks.sweep_summary._target_
    assert get_class(target) is report.SweepSummary
