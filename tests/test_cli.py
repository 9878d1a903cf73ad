"""The commands of the README, run as a user types them (at smoke size)."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advlab.cli import run
from advlab.experiment import train_and_evaluate
from advlab.results import CHECK_NAMES

from helpers import REPO, SMOKE, advlab_cli, config


@pytest.mark.slow
def test_single_run_as_typed_then_evaluate_its_checkpoint(cifar_root, tmp_path):
    out = tmp_path / "run"
    proc = advlab_cli("+experiment=fgsm_defense", "eps=0.01", *SMOKE, f"hydra.run.dir={out}",
                      env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["loss"] == "MixedLoss(1 * adv: Perturbation(Attack('fgsm', norm='linf'), eps=0.01))"
    assert results["training"]["alpha"] == 0.0
    assert results["n_images"] == 64 and 0.01 in results["robustness"]["eps"]
    assert results["config"]["eps"] == 0.01
    # the model file carries its config, training info and headline metrics, readable without unpickling code
    shown = subprocess.run([sys.executable, "-m", "advlab.checkpoint", str(out / "model.pt")], capture_output=True,
                           text=True, cwd=REPO)
    meta = json.loads(shown.stdout)["metadata"]
    assert meta["config"]["eps"] == 0.01 and meta["training"]["epochs"] == 1
    assert meta["metrics"]["clean"] == results["clean"]["value"] and "0.01" in meta["metrics"]["worst_case"]
    for name in ("model.pt", "test_images.png", "confusion_matrix.png", "accuracy_vs_eps.png", "examples_pgd.png"):
        assert (out / name).stat().st_size > 0, name
    # W&B logged offline into the run folder, no account needed
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))

    again = tmp_path / "eval"
    proc = advlab_cli("+experiment=pgd_attack", f"checkpoint={out / 'model.pt'}", *SMOKE, "logger=none",
                      f"hydra.run.dir={again}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((again / "results.json").read_text())
    assert evaluated["training"] == {"checkpoint": str(out / "model.pt")}
    assert evaluated["clean"] == results["clean"], "the saved model is the trained one"
    assert not (again / "model.pt").exists()
    assert evaluated["provenance"]["checkpoint_sha256"] == results["provenance"]["checkpoint_sha256"]
    assert len(evaluated["provenance"]["checkpoint_sha256"]) == 64


@pytest.mark.slow
def test_evaluate_a_checkpoint_with_autoattack(cifar_root, tmp_path):
    out = tmp_path / "run"
    proc = advlab_cli("+experiment=baseline", *SMOKE, "logger=none", f"hydra.run.dir={out}",
                      env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tmp_path / "eval"
    proc = advlab_cli("+experiment=evaluate", f"checkpoint={out / 'model.pt'}", "attack={name:autoattack,queries:200}",
                      *SMOKE, "logger=none", "evaluation.eps=[0.0,0.01]",
                      f"hydra.run.dir={report}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((report / "results.json").read_text())
    accuracy = results["robustness"]["accuracy"]
    assert set(accuracy) == {"fgsm", "pgd", "autoattack", "worst_case"}
    assert accuracy["autoattack"][1]["successes"] <= accuracy["pgd"][1]["successes"]
    checks = {c["name"]: c for c in results["checks"]}
    assert list(checks) == list(CHECK_NAMES)
    # An undefended model: PGD at eps 0.5 must reach chance, and AutoAttack is no weaker than FGSM.
    assert checks["large_eps"]["status"] == "PASS" and checks["large_eps"]["numbers"]["accuracy"] <= 10.0
    assert checks["iterative"]["status"] == "PASS"
    assert "[PASS] large_eps: PGD at eps=0.5" in proc.stdout
    versions = results["provenance"]["versions"]
    assert versions["torch"] and versions["advlab"] == "0.1.0"


@pytest.mark.slow
def test_multirun_sweep_over_eps_and_alpha(cifar_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = advlab_cli("-m", "+experiment=fgsm_defense", "eps=0.001,0.01", "alpha=0,0.5", *SMOKE, "logger=none",
                      f"hydra.sweep.dir={sweep}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(sweep.glob("*/results.json"))
    assert len(jobs) == 4
    seen = {(r["config"]["eps"], r["config"]["alpha"]) for r in (json.loads(p.read_text()) for p in jobs)}
    assert seen == {(0.001, 0.0), (0.001, 0.5), (0.01, 0.0), (0.01, 0.5)}
    summary = (sweep / "sweep_summary.md").read_text()
    assert len(re.findall(r"^\| \d \| eps=", summary, flags=re.M)) == 4
    assert (sweep / "sweep_accuracy_vs_eps.png").stat().st_size > 0


@pytest.mark.slow  # trains the four models of the study
def test_seed_study_smoke_writes_the_whole_report(cifar_root, tmp_path):
    cfg = config("+experiment=seed_study", *SMOKE, "logger=none", f"data.root={cifar_root}",
                 f"+output_dir={tmp_path}")
    run(cfg)
    report = (tmp_path / "report.md").read_text()
    for heading in ("## 1. Basic model", "## 2-3. Untargeted attacks", "## 4. Targeted attacks toward 'deer'",
                    "## 5. FGSM adversarial training"):
        assert heading in report
    assert report.count("| 0.1 |") >= 3  # untargeted, targeted and defense tables reach eps 0.1
    for image in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (tmp_path / image).is_file(), image
    for eps in ("0.001", "0.01", "0.1"):
        defended = json.loads((tmp_path / f"defense_eps{eps}" / "results.json").read_text())
        assert f"* adv: Perturbation(Attack('fgsm', norm='linf'), eps={eps})" in defended["training"]["loss"]
        assert float(eps) in defended["robustness"]["eps"]


@pytest.mark.slow  # spawns two worker processes
def test_the_seed_study_runs_its_models_side_by_side_with_the_same_numbers(cifar_root, tmp_path, monkeypatch):
    """study.jobs=2: the four runs in two worker processes, one torch thread each; every model's numbers equal
    those of the same study run one model after the other with one thread."""
    import torch

    import advlab.seed_study as seed_study

    base = ["+experiment=seed_study", *SMOKE, "logger=none", f"data.root={cifar_root}", "evaluation.eps=[0.0,0.01]",
            "evaluation.attacks=[fgsm,pgd]", "evaluation.checks.enabled=false"]
    monkeypatch.setattr(seed_study, "_cores", lambda: 2)  # two cores: one thread per worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(config(*base, "study.jobs=1", f"+output_dir={tmp_path / 'serial'}"))
    finally:
        torch.set_num_threads(threads)
    run(config(*base, "study.jobs=2", f"+output_dir={tmp_path / 'parallel'}"))
    for folder in ("baseline", "defense_eps0.001", "defense_eps0.01", "defense_eps0.1"):
        serial, parallel = (json.loads((tmp_path / kind / folder / "results.json").read_text())
                            for kind in ("serial", "parallel"))
        assert parallel["clean"] == serial["clean"] and parallel["robustness"] == serial["robustness"], folder
    assert (tmp_path / "parallel" / "report.md").read_text().count("| 0.01 |") >= 2


_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from advlab.seed_study import exit_with_parent

def work(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(), 0.1))
    pool.submit(work, sys.argv[1])
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()  # a zombie has exited (a container's init may not reap it)
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow  # starts processes
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_killed_study_leaves_no_worker_training_on(tmp_path):
    """The study's workers end when their parent is killed (exit_with_parent), instead of running on as orphans."""
    (tmp_path / "parent.py").write_text(_PARENT)
    pidfile = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(pidfile)], cwd=REPO)
    try:
        deadline = time.time() + 120
        while not pidfile.exists() and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        assert _alive(worker), "the worker runs while its parent does"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 20
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived its killed parent"


@pytest.mark.slow  # trains and evaluates twice
def test_same_seed_same_numbers(cifar_root, tmp_path):
    cfg = config("+experiment=fgsm_defense", *SMOKE, "logger=none", f"data.root={cifar_root}",
                 "evaluation.eps=[0.0,0.01]")
    from hydra.utils import instantiate

    a = train_and_evaluate(cfg, instantiate(cfg.data), tmp_path / "a", "a")
    b = train_and_evaluate(cfg, instantiate(cfg.data), tmp_path / "b", "b")
    assert a.clean == b.clean and a.robustness == b.robustness
    assert a.training["val"] == b.training["val"]


@pytest.mark.parametrize("override, error, match", [
    ("alpha=1.5", ValueError, r"alpha \(weight of the clean loss\) must be in \[0, 1\]"),
    ("model.name=resnet999", ValueError, r"unknown name 'resnet999'; registered models"),
    ("evaluation.target=moose", ValueError, r"unknown name 'moose'"),
    ("evaluation.eps=[0.0,-1]", ValueError, r"evaluation.eps must be a finite number >= 0"),
    ("evaluation.attacks=[fgsm,cw]", ValueError, r"evaluation.attacks: unknown attack 'cw'"),
    ("evaluation.attacks=[{name:pgd,stepz:3}]", ValueError, r"pgd: unknown setting\(s\) \['stepz'\]; its settings are steps=30"),
    ("evaluation.attacks=[n-fgsm]", ValueError, r"'n-fgsm' leaves the eps-ball"),
    ("+defense=n_fgsm norm=l2", ValueError, r"norm: attack 'n-fgsm' supports \('linf',\), got 'l2'"),
    ("validation.attack.name=pgdd", ValueError, r"unknown attack 'pgdd'"),
    ("data.source=hdf5", Exception, r"data.source must be one of"),
    ("norm=l3", ValueError, r"norm must be one of \('linf', 'l2'\), got 'l3'"),
    ("guard.action=panic", Exception, r"guard.action must be one of"),
    ("loss=trades loss.beta=-1", Exception, r"loss.beta"),
    ("training.ema_decay=0.999 guard.action=rollback", ValueError, r"guard.action=rollback .* training.ema_decay"),
    ("optimized_metric=worst_case@0.5", ValueError, r"optimized_metric: eps=0.5 is not evaluated"),
])
def test_bad_config_values_fail_early_with_the_key(override, error, match, tmp_path):
    cfg = config("+experiment=fgsm_defense", *SMOKE, "logger=none", *override.split(), f"+output_dir={tmp_path}")
    with pytest.raises(error, match=match):
        run(cfg)


@pytest.mark.slow
def test_help_lists_experiments_defenses_and_models():
    proc = advlab_cli("--help")
    assert proc.returncode == 0, proc.stderr
    listing = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if re.match(r"^\w+: ", line))
    assert {"seed_study", "defense_comparison", "defense_gpu", "evaluate"} <= set(listing["experiment"].split(", "))
    assert {"pgd", "trades", "n_fgsm", "vae"} <= set(listing["defense"].split(", "))
    assert {"seed_cnn", "preact_resnet18", "wide_resnet", "purified"} <= set(listing["model"].split(", "))


@pytest.mark.parametrize("override, message", [
    ("model=resnet9", "Could not find 'model/resnet9'\n\nAvailable options in 'model':\n\tlipschitz_cnn"),
    ("evaluaton.eps=1", "Key 'evaluaton' is not in struct"),
])
@pytest.mark.slow
def test_misspelt_option_or_key_is_refused_with_what_exists(override, message):
    proc = advlab_cli(override, "--cfg", "job")
    assert proc.returncode != 0 and message in proc.stderr


@pytest.mark.slow
def test_gpu_defense_config_runs_end_to_end_at_tiny_scale_on_cpu(cifar_root, tmp_path):
    """defense_gpu (PreActResNet-18, N-FGSM, EMA, channels_last, augmentation) at width 8, float32 on CPU."""
    out = tmp_path / "gpu"
    proc = advlab_cli("+experiment=defense_gpu", *SMOKE, "logger=none", "model.width=8", "trainer.precision=32-true",
                      "data.batch_size=32", "evaluation.attacks=[fgsm]", "evaluation.checks.enabled=false",
                      f"hydra.run.dir={out}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert "Attack('n-fgsm', norm='linf')" in results["training"]["loss"]
    assert results["config"]["model"]["name"] == "preact_resnet18" and results["config"]["training"]["ema_decay"]
    assert (out / "report.html").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


def test_every_perturbation_honours_the_norm(cifar_root):
    """`+defense=fgsm_rs norm=l2` trains with an L2 step (it used to train in L-inf, silently)."""
    from advlab.build import build_loss

    for defense in ("fgsm", "fgsm_rs", "pgd", "mixed"):
        loss = build_loss(config(f"+defense={defense}", "norm=l2", "eps=0.5"))
        norms = {p.attack.norm for _, _, p in loss.terms if p is not None}
        assert norms == {"l2"}, (defense, loss)


def test_a_users_own_attack_class_trains_and_evaluates_through_target(cifar_root, tmp_path):
    """An attack defined outside advlab, named by _target_ in the config, is the training perturbation,
    the validation attack and an evaluation attack, with no edit to advlab."""
    entry = "{_target_:user_attacks.ShiftAttack,strength:0.5}"
    labelled = "{_target_:user_attacks.ShiftAttack,strength:0.5,label:shift}"
    cfg = config("+experiment=fgsm_defense", *SMOKE, "logger=none", f"data.root={cifar_root}", "eps=0.03",
                 "evaluation.eps=[0,0.03]", "evaluation.checks.enabled=false",
                 # `~key +key=...` replaces a whole mapping (a plain `key=` would merge into the old one)
                 "~perturbation.attack", f"+perturbation.attack={entry}", "~validation.attack",
                 f"+validation.attack={entry}",
                 f"evaluation.attacks=[fgsm,{labelled}]", f"+output_dir={tmp_path}")
    import user_attacks

    user_attacks.ShiftAttack.calls.clear()
    results = run(cfg)
    assert {"train", "eval"} <= set(user_attacks.ShiftAttack.calls)
    assert "Perturbation(ShiftAttack(strength=0.5), eps=0.03)" in results.training["loss"]
    shift = results.robust("shift", 0.03)
    assert shift.successes <= results.clean.successes and "val/adv_acc" in results.training["val"]
