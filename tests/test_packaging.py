"""advlab as a wheel: built from the checkout, installed elsewhere, run from a folder that is not the checkout.

The installed copy shadows the editable one (PYTHONPATH puts it first); its dependencies are the
ones of this environment (installed with --no-deps). The configs travel inside the package
(conf/ -> advlab.conf), and a user's own config folder (--config-dir) composes with them.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO, SMOKE

USER_EXPERIMENT = """\
# @package _global_
# A user's experiment, outside advlab, built from advlab's groups.
defaults:
  - override /perturbation: fgsm
name: my_defense
eps: 0.02
alpha: 0.5
evaluation:
  eps: [0.0, 0.02]
  attacks: [fgsm]
  checks:
    enabled: false
"""


def _run(args, cwd, env, timeout=300):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:4]}...\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_folder(cifar_root, tmp_path):
    # Build from a copy: the checkout gets no build/ folder.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("advlab", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "ADVLAB_DATA": str(cifar_root)}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
         cwd=tmp_path, env=env)
    (wheel,) = (tmp_path / "dist").glob("advlab-*.whl")

    # Every module and every config of the checkout is in the wheel (the package list in pyproject is explicit).
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(src).as_posix() for p in (src / "advlab").rglob("*.py")}
    expected |= {"advlab/conf/" + p.relative_to(src / "conf").as_posix() for p in (src / "conf").rglob("*")
                 if p.suffix in (".yaml", ".py")}
    assert expected - names == set(), "missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "advlab = advlab.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel)], cwd=tmp_path, env=env)
    env["PYTHONPATH"] = str(site)  # the installed copy comes before the editable checkout
    work = tmp_path / "elsewhere"
    (work / "my_conf" / "experiment").mkdir(parents=True)
    (work / "my_conf" / "experiment" / "my_defense.yaml").write_text(USER_EXPERIMENT)

    # The console script: --help lists advlab's groups and the user's experiment beside advlab's.
    script = site / "bin" / "advlab"
    assert script.is_file(), sorted(p.name for p in site.iterdir())
    shown = _run([str(script), "--config-dir", "my_conf", "--help"], cwd=work, env=env).stdout
    listing = dict(line.split(": ", 1) for line in shown.splitlines() if line[:1].isalpha() and ": " in line)
    assert {"my_defense", "fgsm_defense", "evaluate"} <= set(listing["experiment"].split(", "))
    assert {"pgd", "trades"} <= set(listing["defense"].split(", "))

    # `python -m advlab` (runpy.run_module is what -m runs), in the process that asserts where advlab comes from:
    # a smoke run of the user's experiment.
    out = work / "run"
    module_run = ("import runpy, sys; import advlab, advlab.conf; "
                  f"site = {str(site.resolve())!r}; "
                  "assert advlab.__file__.startswith(site), advlab.__file__; "
                  "assert advlab.conf.__file__.startswith(site), advlab.conf.__file__; "
                  "sys.argv = ['advlab', *sys.argv[1:]]; runpy.run_module('advlab', run_name='__main__', alter_sys=True)")
    _run([sys.executable, "-c", module_run, "--config-dir", "my_conf", "+experiment=my_defense", *SMOKE,
          "logger=none", f"hydra.run.dir={out}"], cwd=work, env=env)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["name"] == "my_defense" and results["config"]["eps"] == 0.02
    assert "0.5 * adv: Perturbation(Attack('fgsm', norm='linf'), eps=0.02)" in results["training"]["loss"]
    assert (out / "model.pt").stat().st_size > 0
