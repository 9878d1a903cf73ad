"""The W&B sweep route (sweeps/wandb.yaml): `wandb sweep` + `wandb agent`, each trial one `python -m advlab`.

The agent's command is expanded here as the agent expands it (W&B's own create_sweep_command_args: each sampled
parameter `key=value` for ${args_no_hyphens}), and the resulting overrides are composed with Hydra: a parameter
advlab has no key for, or a metric name advlab does not log, fails here rather than in every trial."""

import copy

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from helpers import REPO, config

from advlab import tracking
from advlab.objective import check_metric

SWEEP = REPO / "sweeps" / "wandb.yaml"
MACRO = "${args_no_hyphens}"


def _samples(parameters: dict) -> list[dict]:
    """A few samples of each parameter as the agent sends them: {name: {"value": v}} (every listed value;
    the ends and the middle of a min/max range)."""
    draws = {}
    for name, spec in parameters.items():
        if "values" in spec:
            draws[name] = list(spec["values"])
        elif "value" in spec:
            draws[name] = [spec["value"]]
        else:
            low, high = spec["min"], spec["max"]
            draws[name] = [low, (low + high) / 2, high]
    n = max(len(v) for v in draws.values())
    return [{name: {"value": values[i % len(values)]} for name, values in draws.items()} for i in range(n)]


def _agent_command(sweep: dict, args: dict) -> list[str]:
    """The command line `wandb agent` runs for one trial (wandb_agent.Agent._command_run's expansion)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": args})
    macros["env"] = ["/usr/bin/env"]
    line = []
    for part in create_sweep_command(copy.deepcopy(sweep["command"])):
        part = str(part)
        line += (macros.get(part[2:-1]) or []) if part.startswith("${") and part.endswith("}") else [part]
    return line


def _overrides(line: list[str]) -> list[str]:
    """The Hydra overrides of `[/usr/bin/env] python -m advlab OVERRIDES...`."""
    start = line.index("advlab") + 1
    assert line[start - 2:start] == ["-m", "advlab"], line
    return line[start:]


def test_wandb_sweep_trials_compose_and_report_the_metric(monkeypatch):
    sweep = yaml.safe_load(SWEEP.read_text())
    assert sweep["command"].count(MACRO) == 1, "parameters must reach advlab as Hydra overrides (key=value)"
    assert set(sweep["parameters"]) == {"eps", "alpha"}
    assert sweep["method"] in ("bayes", "grid") and sweep["metric"]["goal"] == "maximize"
    assert sweep["metric"]["name"] == tracking.OBJECTIVE  # the summary key tracking.log_results writes
    monkeypatch.setenv("WANDB_RUN_ID", "trial01")  # the agent sets it for each trial (hydra.run.dir names it)

    samples = _samples(sweep["parameters"])
    assert len(samples) == 4
    for args in samples:
        line = _agent_command(sweep, args)
        assert line[:2] == ["/usr/bin/env", "python"]
        overrides = _overrides(line)
        assert [f"{k}={v['value']}" for k, v in args.items()] == overrides[-len(args):]
        cfg = config(*overrides)
        assert cfg.name == "fgsm_defense" and cfg.perturbation.attack == "fgsm"
        assert cfg.eps == args["eps"]["value"] and cfg.alpha == args["alpha"]["value"]
        assert float(cfg.evaluation.eps[-1]) == cfg.eps  # the training eps is evaluated
        assert cfg.logger.wandb.mode == "online"  # an offline trial never reports its metric to the sweep
        assert cfg.optimized_metric is not None
        check_metric(cfg, set(cfg.evaluation.attacks))  # the objective is one the trial evaluates

    with pytest.raises(ConfigCompositionException, match="epss"):  # a misspelt parameter fails composition
        config(*_overrides(_agent_command(sweep, {"epss": {"value": 0.01}, "alpha": {"value": 0.5}})))


def test_wandb_sweep_trial_folder_is_its_run_id(monkeypatch):
    from hydra import compose, initialize_config_dir

    sweep = yaml.safe_load(SWEEP.read_text())
    monkeypatch.setenv("WANDB_RUN_ID", "trial01")
    overrides = _overrides(_agent_command(sweep, _samples(sweep["parameters"])[0]))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.run.dir == "outputs/wandb_sweep/trial01"

