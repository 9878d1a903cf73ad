"""What `python -m advlab` runs: the Hydra plumbing around a task.

A task is a function (cfg, datamodule, run_dir) -> results: `experiment` (one model: train or
load, evaluate, write) and `seed_study` (the study's models, one report) sit on top of the same
run body (advlab.experiment.train_and_evaluate).

Before any work, `prepare` checks what the user gave: the config's values, the data and the
files the config names. A mistake there (or a missing or corrupt file found later: a
UserError) is printed as one line, `advlab: error: <message>`, with exit status 2 and no
traceback; ADVLAB_DEBUG=1 prints the traceback too. Any other exception is a bug and keeps
its traceback.
"""

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from advlab.build import check_config
from advlab.errors import UserError
from advlab.experiment import is_rank_zero, run_binarization, train_and_evaluate
from advlab.objective import metric_value
from advlab.results import Results
from advlab.seed_study import run_seed_study
from advlab.training import resume_path


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


TASKS = {"experiment": run_experiment, "seed_study": run_seed_study, "binarization": run_binarization}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextmanager
def as_user_errors():
    """Errors raised while the config is checked and the data read are the user's: re-raised as UserError.

    ValueError (the checks name the key and what is allowed), Hydra's wrapper around a config
    object's constructor (its cause is the message) and OmegaConf's own (a missing mandatory
    value, a broken interpolation: their first line)."""
    try:
        yield
    except UserError:
        raise
    except InstantiationException as error:
        raise UserError(_first_line(error.__cause__ or error)) from error
    except OmegaConfBaseException as error:
        raise UserError(_first_line(error)) from error
    except ValueError as error:
        raise UserError(str(error)) from error


def prepare(cfg: DictConfig):
    """Check what the run reads from the user before any work, and return the run's datamodule.

    The config's values, the data module's settings, a resume checkpoint, then the data splits
    the run uses (loaded now, so a missing or corrupt archive stops the run before training;
    the datamodule keeps them, nothing is read twice). A checkpoint to evaluate is read first
    thing by the run itself (advlab.experiment), before it writes anything."""
    with as_user_errors():
        if cfg.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {cfg.task!r}")
        check_config(cfg)
        datamodule = instantiate(cfg.data)
        resume_path(cfg.resume)
        datamodule.setup("test" if cfg.get("checkpoint") else None)
    return datamodule


def cpu_count() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_job(launcher, cores: int) -> int | None:
    """Torch threads for each job of a multirun run by `launcher` (the hydra.launcher config) on `cores` cores.

    The joblib launcher (hydra/launcher=joblib or joblib_local) runs n_jobs jobs at once in worker
    processes, each of which would otherwise take every core: each job gets cores // n_jobs threads
    (at least 1), so jobs x threads never exceed the cores. n_jobs <= 0 is joblib's "all cores but
    |n_jobs| - 1" (-1: all): that many jobs, one thread each. None: any other launcher (basic: one
    job at a time; submitit: a job per allocation), which keeps torch's default."""
    n_jobs = launcher.get("n_jobs")
    if "joblib" not in str(launcher.get("_target_", "")).lower() or n_jobs is None:
        return None
    jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // jobs)


def set_job_threads() -> int | None:
    """At the start of a multirun's job: torch's threads for its launcher (threads_per_job), if any."""
    threads = threads_per_job(HydraConfig.get().launcher, cpu_count()) if _multirun() else None
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        if is_rank_zero():
            print(f"advlab: {threads} torch thread(s) for this job (joblib launcher, {cpu_count()} cores)", flush=True)
    return threads


def finished_results(cfg: DictConfig, run_dir: Path) -> Results | None:
    """A rerun multirun's finished job: the results of run_dir when they are complete, else None.

    Complete: results.json loads (it is written atomically, last but the report: advlab.io), was
    written for the same overrides, and when the job trains, model.pt is there too."""
    if cfg.task != "experiment" or not (run_dir / "results.json").is_file():
        return None
    try:
        results = Results.load(run_dir / "results.json")
    except (OSError, ValueError):
        return None
    if results.overrides != run_overrides():
        return None
    if not cfg.get("checkpoint") and not (run_dir / "model.pt").is_file():
        return None
    return results


def run(cfg: DictConfig):
    """The run of cfg (what `python -m advlab` does, exceptions and all): its results, or with
    optimized_metric set, that number (a float: the objective of a Hydra sweeper such as Optuna).

    In a multirun, a job whose folder already holds complete results (a sweep rerun into the same
    hydra.sweep.dir) is skipped: its results are read back, nothing is trained or evaluated."""
    set_job_threads()
    run_dir = run_dir_of(cfg)
    results = finished_results(cfg, run_dir) if _multirun() else None
    if results is not None:
        with as_user_errors():
            check_config(cfg)  # as in a fresh run: the rerun's optimized_metric, loggers, ... before its result
        if is_rank_zero():
            print(f"advlab: skipped (complete results): {run_dir / 'results.json'}", flush=True)
    else:
        datamodule = prepare(cfg)
        results = TASKS[cfg.task](cfg, datamodule, run_dir)
    if cfg.get("optimized_metric") is None:
        return results
    value = metric_value(cfg.optimized_metric, results)
    if is_rank_zero():
        print(f"optimized_metric: {value:.6g}")
    return value


def main(cfg: DictConfig):
    """Entry point behind `python -m advlab` and `advlab`: run(cfg), with a user's mistake as one line.

    A UserError prints `advlab: error: <message>` on stderr and exits with status 2 (SystemExit
    passes through Hydra's own handler, which would print a traceback and exit 1);
    ADVLAB_DEBUG=1 prints the traceback before it. Other exceptions propagate: they are bugs."""
    try:
        return run(cfg)
    except UserError as error:
        if os.environ.get("ADVLAB_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"advlab: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
