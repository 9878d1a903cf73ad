"""What `python -m advlab` runs: the Hydra plumbing around a task.

A task is a function (cfg, datamodule, run_dir) -> results: `experiment` (one model: train or
load, evaluate, write) and `seed_study` (the study's models, one report) sit on top of the same
run body (advlab.experiment.train_and_evaluate).
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from advlab.build import check_config
from advlab.experiment import is_rank_zero, train_and_evaluate
from advlab.seed_study import run_seed_study


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_dir_of(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/interactive")


def run_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_name(cfg: DictConfig) -> str:
    """cfg.name, and in a multirun the job's own overrides ("defense_comparison +defense=pgd"), so the
    W&B runs of a sweep are told apart by name as well as by their config columns."""
    if not _multirun():
        return cfg.name
    skip = ("+experiment=", "+debug=", "logger", "hydra.", "data.root=")
    return " ".join([cfg.name, *(o for o in run_overrides() if not o.startswith(skip))])


def sweep_group() -> str | None:
    """Runs of one multirun share the sweep folder's name as W&B group."""
    return Path(HydraConfig.get().sweep.dir).name if _multirun() else None


def run_experiment(cfg: DictConfig, datamodule, run_dir: Path):
    results = train_and_evaluate(cfg, datamodule, run_dir, name=run_name(cfg), group=sweep_group(),
                                 overrides=run_overrides())
    if is_rank_zero():
        print("\n" + "\n".join(results.summary_lines()))
        print(f"results: {run_dir / 'results.json'}")
    return results


TASKS = {"experiment": run_experiment, "seed_study": run_seed_study}


def run(cfg: DictConfig):
    """Entry point behind `python -m advlab`."""
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {cfg.task!r}")
    check_config(cfg)
    return TASKS[cfg.task](cfg, instantiate(cfg.data), run_dir_of(cfg))
