"""W&B: log_results renders a Results object (tables with intervals, the summary numbers, the figures); offline,
a sweep's runs are named by their overrides, grouped by the sweep, and the offline run directory holds the
accuracy-vs-eps table with the numbers of results.json, and the figures."""

import json

import pytest

from helpers import SMOKE, advlab_cli

from advlab import plots, tracking
from advlab.results import Curves, Results, Targeted
from advlab.stats import Rate

EPS = [0.0, 0.01, 0.03]
COLUMNS = ["attack", "eps", "accuracy", "ci95_low", "ci95_high", "n"]


class FakeRun:
    """What log_results uses of a wandb run: log() and summary."""

    def __init__(self):
        self.logged, self.summary = [], {}

    def log(self, payload):
        self.logged.append(payload)


class FakeLogger:
    def __init__(self):
        self.experiment = FakeRun()


def synthetic_results() -> Results:
    return Results(n_images=50, clean=Rate(40, 50), confusion=[[1, 0], [0, 1]],
                   robustness=Curves(EPS, {"fgsm": [Rate(k, 50) for k in (40, 33, 20)],
                                           "worst_case": [Rate(k, 50) for k in (40, 30, 10)]}),
                   targeted=Targeted(4, "deer", Curves(EPS, {"pgd": [Rate(k, 45) for k in (0, 5, 20)]})))


def test_log_results_renders_the_results_object(tmp_path):
    results = synthetic_results()
    figure = plots.rate_curves(EPS, results.robustness.rates, tmp_path / "accuracy_vs_eps.png", "accuracy (%)", "t")
    logger = FakeLogger()
    tracking.log_results(logger, results, {"accuracy_vs_eps": figure})
    (payload,) = logger.experiment.logged
    table = payload["eval/accuracy_vs_eps"]
    assert table.columns == COLUMNS
    assert table.data == [[name, e, r.value, *r.ci95, r.n] for name, rates in results.robustness.rates.items()
                          for e, r in zip(EPS, rates)]
    targeted = payload["eval/targeted_success"]
    assert targeted.columns == ["attack", "eps", "success_rate", "ci95_low", "ci95_high", "n"]
    assert [row[2] for row in targeted.data] == [0.0, 5 / 45, 20 / 45] and {row[5] for row in targeted.data} == {45}
    assert {"eval/accuracy_vs_eps_plot", "figures/accuracy_vs_eps"} <= set(payload)
    summary = logger.experiment.summary
    assert summary["eval/clean_acc"] == 0.8 and summary["eval/n_images"] == 50
    assert summary["eval/fgsm_acc@0.01"] == 33 / 50 and summary["eval/worst_case_acc@0.03"] == 10 / 50
    assert len(summary) == 2 + 2 * len(EPS)
    tracking.log_results(None, results, {})  # logger=none: nothing to do


def test_offline_wandb_run_holds_the_table_and_figures(cifar_root, tmp_path):
    proc = advlab_cli("-m", "+experiment=fgsm_defense", *SMOKE, "logger=wandb", "eps=0.01", "alpha=0.5",
                      f"hydra.sweep.dir={tmp_path}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "0"
    results = Results.load(job / "results.json")
    (run,) = (job / "wandb").glob("offline-run-*")
    (table_file,) = (run / "files" / "media" / "table" / "eval").glob("accuracy_vs_eps_[0-9]*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS
    logged = {(attack, eps): (value, low, high, n) for attack, eps, value, low, high, n in table["data"]}
    for attack, rates in results.robustness.rates.items():
        for eps, rate in zip(results.eps, rates):
            assert logged[(attack, eps)] == pytest.approx((rate.value, *rate.ci95, rate.n))
            assert logged[(attack, eps)][0] == rate.value and logged[(attack, eps)][3] == rate.n
    images = {p.name.split("_1_")[0] for p in (run / "files" / "media" / "images" / "figures").glob("*.png")}
    assert {"accuracy_vs_eps", "confusion_matrix", "test_images", "examples_fgsm", "examples_pgd"} <= images
    # the run's name carries its overrides and its group is the sweep folder (both in the run record)
    record = next(run.glob("run-*.wandb")).read_bytes()
    assert b"fgsm_defense eps=0.01 alpha=0.5" in record
    assert tmp_path.name.encode() in record
