"""optimized_metric (advlab/objective.py): the float a run returns to a Hydra sweeper, its checks before any
work, and an Optuna search (conf/hparams_search/seed_cnn_optuna.yaml) at smoke size through the command line."""

import json

import pytest
import yaml

from advlab.build import check_config
from advlab.objective import metric_value, parse_metric
from advlab.results import Curves, Results
from advlab.stats import Rate
from helpers import SMOKE, advlab_cli, config


def _results() -> Results:
    return Results(n_images=10, clean=Rate(8, 10), confusion=[[8, 2], [0, 0]],
                   robustness=Curves([0.0, 0.01], {"fgsm": [Rate(8, 10), Rate(5, 10)],
                                                   "worst_case": [Rate(8, 10), Rate(4, 10)]}))


@pytest.mark.parametrize("spec, value", [
    ("clean", 0.8), ("worst_case@0.01", 0.4), ("robust:fgsm@0.01", 0.5), ("worst_case@1e-2", 0.4),
    ({"clean": 0.5, "worst_case@0.01": 0.5}, 0.6), ({"clean": 1, "robust:fgsm@0": -1}, 0.0),
])
def test_metric_value_picks_and_weighs_the_results(spec, value):
    assert metric_value(spec, _results()) == pytest.approx(value)


@pytest.mark.parametrize("spec", ["accuracy", "worst_case", "worst_case@", "worst_case@x", "robust:@0.01",
                                  "pgd@0.01", {}, {"clean": "half"}, {"clean": True}, 0.5, ["clean"]])
def test_malformed_metric_is_refused_with_the_allowed_forms(spec):
    with pytest.raises(ValueError, match=r"optimized_metric: .*allowed: clean \| worst_case@EPS"):
        parse_metric(spec)


@pytest.mark.parametrize("override, message", [
    ("optimized_metric=worst_case@0.03", r"eps=0.03 is not evaluated; evaluation.eps is \[0, 0.001, 0.01, 0.1"),
    ("optimized_metric=robust:apgd-t@0.01", r"attack 'apgd-t' is not evaluated"),
    ("optimized_metric=clean@0.01", r"'clean@0.01' is not a metric; allowed: clean"),
])
def test_check_config_refuses_a_metric_the_run_does_not_evaluate(override, message):
    cfg = config("+experiment=fgsm_defense", override)
    with pytest.raises(ValueError, match="optimized_metric: " + message):
        check_config(cfg)


def test_check_config_accepts_evaluated_metrics():
    check_config(config("+experiment=fgsm_defense", "optimized_metric={clean:0.5,worst_case@0.01:0.5}"))
    check_config(config("+experiment=fgsm_defense", "hparams_search=seed_cnn_optuna"))
    check_config(config("+experiment=fgsm_defense", "optimized_metric=robust:pgd@0.1"))
    with pytest.raises(ValueError, match="per_attack=true"):
        check_config(config("+experiment=fgsm_defense", "optimized_metric=robust:pgd@0.1",
                            "evaluation.per_attack=false"))


def test_no_metric_by_default():
    assert config("+experiment=fgsm_defense").optimized_metric is None


@pytest.mark.slow
def test_optuna_sweep_returns_the_metric_of_each_trial(cifar_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = advlab_cli("-m", "+experiment=fgsm_defense", "hparams_search=seed_cnn_optuna", *SMOKE,
                      "hydra.sweeper.n_trials=3", "evaluation.attacks=[fgsm]", "evaluation.checks.enabled=false",
                      "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                      env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(jobs) == 3
    # Each trial's objective, recomputed from its results.json: half clean, half worst case at eps 0.01.
    objectives = [0.5 * r.clean.value + 0.5 * r.worst_case(0.01).value
                  for r in (Results.load(job / "results.json") for job in jobs)]
    assert best["best_value"] == pytest.approx(max(objectives))
    winners = [json.loads((job / "results.json").read_text())["config"]["alpha"]
               for job, objective in zip(jobs, objectives) if objective == pytest.approx(max(objectives))]
    assert best["best_params"]["alpha"] in winners
    assert set(best["best_params"]) == {"alpha", "eps", "optimizer.lr"}
    assert proc.stdout.count("optimized_metric: ") == 3
    assert (sweep / "sweep_summary.md").is_file()  # the SweepSummary callback still summarizes the trials
