"""bench/attacks.py (make bench): it runs end to end, reports every section, and what it
claims identical is identical. Its timings are not checked here: targets are measured by
the script on a quiet machine, not asserted by timed tests."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO

SECTIONS = ("model", "pgd_vs_torchattacks", "pgd_vs_floor", "profile", "robust_eval_vs_torchattacks", "eps_grid",
            "training_throughput", "targets")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_attacks", REPO / "bench" / "attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(cifar_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # One thread: this checks what the script reports, not its speed, and two threads on a
    # shared 2-core machine can take minutes.
    env = {**os.environ, "ADVLAB_DATA": str(cifar_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "attacks.py"), "--quick", "--n-images", "32", "--steps", "2",
         "--device", "cpu", "--threads", "1", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow  # runs bench/attacks.py in a subprocess
def test_json_has_every_section_and_the_hardware(quick_run):
    data, _ = quick_run
    assert set(data["results"]) == {"cpu"}
    cpu = data["results"]["cpu"]
    assert all(section in cpu for section in SECTIONS)
    assert data["hardware"]["cpu"] and data["hardware"]["torch_threads"] >= 1
    assert data["settings"]["n_images"] == 32 and data["settings"]["steps"] == 2
    assert cpu["model"]["n"] == cpu["pgd_vs_torchattacks"]["n"] == cpu["eps_grid"]["n"] == 32
    for key in ("pgd_vs_torchattacks", "pgd_vs_floor", "robust_eval_vs_torchattacks", "eps_grid"):
        assert all(s > 0 for s in cpu[key]["seconds"].values())
        assert math.isfinite(cpu[key]["ratio"]) and cpu[key]["ratio"] > 0
    assert set(cpu["training_throughput"]["images_per_second"]) == {"clean", "fgsm", "pgd10"}
    assert all(v > 0 for v in cpu["training_throughput"]["images_per_second"].values())
    assert [t["key"] for t in cpu["targets"]] == ["pgd_vs_torchattacks", "pgd_vs_floor",
                                                  "robust_eval_vs_torchattacks", "eps_grid"]


@pytest.mark.slow  # runs bench/attacks.py in a subprocess
def test_what_is_reported_identical_is_identical(quick_run):
    cpu = quick_run[0]["results"]["cpu"]
    same = cpu["pgd_vs_torchattacks"]
    assert same["robust_correct"]["advlab"] == same["robust_correct"]["torchattacks"]
    assert same["predictions_differ"] == 0 and same["same_predictions"]
    # Whole-step differences come only from rounding-level gradient signs: rare (see SAME_IMAGE_TOL).
    assert same["images_differing"] <= 1
    grid = cpu["eps_grid"]
    assert grid["correct"]["advlab"] == grid["correct"]["naive_worst_case"] and grid["identical"]
    assert len(grid["correct"]["advlab"]) == len(grid["eps"]) == 4
    # The worst case can only fall as eps grows, and never exceeds the naive per-eps counts.
    assert grid["correct"]["advlab"] == sorted(grid["correct"]["advlab"], reverse=True)
    assert all(w <= r for w, r in zip(grid["correct"]["naive_worst_case"], grid["correct"]["naive_raw"]))
    evaluation = cpu["robust_eval_vs_torchattacks"]
    assert evaluation["robust_correct"]["advlab"] <= evaluation["robust_correct"]["torchattacks"]
    assert evaluation["robust_correct"]["advlab"] <= evaluation["clean_correct"] <= 32


@pytest.mark.slow  # runs bench/attacks.py in a subprocess
def test_printed_table_names_each_target_with_a_verdict(quick_run):
    data, stdout = quick_run
    for target in data["results"]["cpu"]["targets"]:
        line = next(line for line in stdout.splitlines() if line.startswith(target["what"]))
        assert ("PASS" if target["pass"] else "MISS") in line
    assert data["hardware"]["cpu"] in stdout


def test_arguments_are_checked_and_quick_sizes_apply():
    bench = _bench_module()
    args = bench.parse_args(["--quick", "--steps", "3"])
    assert (args.n_images, args.steps, args.repeats) == (bench.QUICK["n_images"], 3, 1)
    assert args.step_size == pytest.approx(args.eps / 4)
    for bad in (["--n-images", "0"], ["--eps", "0"], ["--grid", "0.01", "2"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_measure_rotates_the_order_and_keeps_the_last_outputs():
    bench = _bench_module()
    calls = []
    delay = {"a": 0.0, "b": 0.02, "c": 0.04}  # seconds each way takes at least

    def way(name):
        def run(bs):
            calls.append((name, len(bs[0][1])))
            time.sleep(delay[name])
            return name
        return run

    ways = {name: way(name) for name in "abc"}
    batches = [(torch.zeros(100, 1), torch.zeros(100))]
    times, outputs = bench.measure(ways, batches, repeats=3, device=torch.device("cpu"))
    warmup, timed = calls[:3], [name for name, _ in calls[3:]]
    assert all(n == bench.WARMUP_IMAGES for _, n in warmup)  # warmed up on a few images only
    assert timed == list("abc") + list("bca") + list("cab")
    assert outputs == {"a": "a", "b": "b", "c": "c"}
    # the median of each way's own timings: at least its delay, and a way that does almost nothing still takes time
    assert times["a"] > 0 and times["b"] >= delay["b"] and times["c"] >= delay["c"], times


@pytest.mark.slow  # runs bench/training.py in a subprocess
def test_training_bench_reports_both_sides_and_the_ratio(cifar_root, tmp_path):
    out = tmp_path / "training.json"
    env = {**os.environ, "ADVLAB_DATA": str(cifar_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "training.py"), "--batches", "10", "--repeats", "1",
                           "--kinds", "clean,fgsm", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["timed_batches"] == 5 and data["batch_size"] == 128
    for kind in ("clean", "fgsm"):
        row = data["kinds"][kind]
        assert set(row["images_per_second"]) == {"plain", "lightning"}
        assert row["ratio"] == pytest.approx(row["images_per_second"]["lightning"] / row["images_per_second"]["plain"])
        assert all(v > 0 for v in row["images_per_second"].values())
        assert f"{kind:8}" in proc.stdout
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "training.py"), "--kinds", "pgd99"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--kinds: unknown ['pgd99']" in bad.stderr


@pytest.mark.slow  # runs bench/speedrun.py, which trains twice and starts the command line
def test_speedrun_bench_trains_both_sides_and_compares_them_at_equal_time(cifar_root, tmp_path):
    out = tmp_path / "speedrun.json"
    env = {**os.environ, "ADVLAB_DATA": str(cifar_root), "ADVLAB_QUIET": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "speedrun.py"), "--minutes", "0.05",
                           "--curve-images", "16", "--test-images", "32", "--out", str(tmp_path / "run"),
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    for side in ("plain", "advlab"):
        curve = data[side]["curve"]
        assert 1 <= len(curve) <= 4 and all(p["robust"]["n"] == 16 for p in curve), side
        assert curve[-1]["seconds"] >= 3.0 * 0.9, "each side trained for its budget"
        assert data[side]["robust"]["n"] == 32 and data[side]["robust"]["value"] <= data[side]["clean"]["value"]
    assert (tmp_path / "run" / "time_to_robustness.png").is_file()
    assert (tmp_path / "run" / "time_to_robustness_vs_plain.png").is_file(), "both curves on one figure"
    assert "advlab - plain:" in proc.stdout and "ratio" in proc.stdout
