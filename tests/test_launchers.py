"""Hydra launchers (conf/hydra/launcher/, the sweep extra) and resumable sweeps (advlab.cli.finished_results).

Sweeps at smoke size, FGSM only, no checks: the same overrides through the basic, submitit_local and
joblib_local launchers give the same sweep summary; a sweep rerun into its own folder skips the jobs
whose results are complete and runs the others."""

import json

import pytest
from hydra import compose, initialize_config_dir

from advlab.cli import finished_results, threads_per_job

from helpers import REPO, SMOKE, advlab_cli, config

CHEAP = [*SMOKE, "logger=none", "evaluation.attacks=[fgsm]", "evaluation.checks.enabled=false"]
SKIPPED = "advlab: skipped (complete results): "


def _launcher(name: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher


def test_launcher_configs_compose():
    joblib = _launcher("joblib_local")
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    slurm = _launcher("slurm")
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.timeout_min == 240
    for name in ("submitit_slurm", "submitit_local", "joblib"):  # the plugins' own, named in README and docs
        assert _launcher(name)._target_.startswith("hydra_plugins.")


@pytest.mark.parametrize("target, n_jobs, cores, threads", [
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 2, 16, 8),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 3, 16, 5),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 4, 2, 1),  # never below one
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", -1, 16, 1),  # all cores: 16 jobs
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", -3, 16, 1),  # 14 jobs
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", None, 16, None),
    ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None, 16, None),
])
def test_threads_per_job_never_oversubscribe(target, n_jobs, cores, threads):
    launcher = {"_target_": target} | ({} if n_jobs is None else {"n_jobs": n_jobs})
    assert threads_per_job(launcher, cores) == threads
    if threads is not None and n_jobs > 0:
        assert threads * min(n_jobs, cores) <= cores


def test_incomplete_results_are_not_finished(tmp_path):
    cfg = config(*SMOKE)
    assert finished_results(cfg, tmp_path) is None  # nothing there
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "results.json").write_text("{")  # not results (advlab.io writes atomically: never half a file)
    assert finished_results(cfg, tmp_path) is None


def _sweep(cifar_root, sweep_dir, *overrides):
    proc = advlab_cli("-m", "+experiment=fgsm_defense", *overrides, *CHEAP, f"hydra.sweep.dir={sweep_dir}",
                      env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _summary(sweep_dir) -> list[dict]:
    """sweep_summary.json's numbers and overrides per job (it holds no paths or times)."""
    return json.loads((sweep_dir / "sweep_summary.json").read_text())


@pytest.mark.slow
def test_parallel_launchers_give_the_sequential_summary(cifar_root, tmp_path):
    _sweep(cifar_root, tmp_path / "basic", "eps=0.001,0.01")
    expected = _summary(tmp_path / "basic")
    assert [job["job"] for job in expected] == ["0", "1"]
    _sweep(cifar_root, tmp_path / "submitit", "eps=0.001,0.01", "hydra/launcher=submitit_local")
    assert (tmp_path / "submitit" / ".submitit").is_dir()  # the jobs ran as submitit jobs
    assert _summary(tmp_path / "submitit") == expected
    proc = _sweep(cifar_root, tmp_path / "joblib", "eps=0.001,0.01", "hydra/launcher=joblib_local")
    assert proc.stdout.count("torch thread(s) for this job (joblib launcher") == 2
    assert _summary(tmp_path / "joblib") == expected


@pytest.mark.slow
def test_a_rerun_sweep_skips_finished_jobs(cifar_root, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = ["eps=0.001,0.01", "alpha=0,0.5"]
    _sweep(cifar_root, sweep, *overrides)
    first = _summary(sweep)
    assert len(first) == 4
    done = {job: (sweep / job / "results.json").stat().st_mtime_ns for job in ("0", "1")}
    # As if killed after job 1: job 2 left no results; job 3 left results but lost its model.pt.
    (sweep / "2" / "results.json").unlink()
    (sweep / "3" / "model.pt").unlink()
    (sweep / "sweep_summary.json").unlink()
    proc = _sweep(cifar_root, sweep, *overrides)
    skipped = [line.removeprefix(SKIPPED) for line in proc.stdout.splitlines() if line.startswith(SKIPPED)]
    assert skipped == [str(sweep / job / "results.json") for job in ("0", "1")]
    assert {job: (sweep / job / "results.json").stat().st_mtime_ns for job in ("0", "1")} == done
    assert all((sweep / job / "results.json").is_file() and (sweep / job / "model.pt").is_file() for job in "23")
    assert _summary(sweep) == first  # all four jobs, the rerun ones with the same numbers (same seed, CPU)
