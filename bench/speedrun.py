"""The robust speedrun against a plain PyTorch script, trained for the same wall time on the same machine.

    python bench/speedrun.py                      # 10 minutes each (the speedrun's default budget)
    python bench/speedrun.py --quick              # 1 minute each, 100 curve and 200 test images: a smoke test
    python bench/speedrun.py --minutes 5 --seed 1 --json speedrun.json

1. plain: `plain_fgsm_rs` below, about 60 lines of PyTorch written the way a new user writes fast adversarial
   training (Wong et al. 2020): FGSM from a random start (step 1.25 eps), a small VGG-style network with batch
   norm, all 45,000 training images (the same 5,000 held out as advlab's run holds out), random crop and flip,
   SGD with a one-cycle rate, float32. It gets the same wall-clock budget, and its one-cycle rate runs on the
   clock as advlab's does (advlab.budget), so that it too ends its cycle when its time is up.
2. advlab: `python -m advlab +experiment=speedrun speedrun.minutes=M` as a user runs it (a subprocess).

Both are measured at the same shares of their budgets with the same function (advlab.curve.measure_point:
AutoAttack-strength fast mode at 8/255 on the same first test images, clock paused), and both final models by
the same evaluation of all the test images (FGSM, PGD, fast mode: advlab's default). Printed: the two curves, and
advlab's robust accuracy over the plain script's at each point (equal training time), with the targets of
docs/speedrun.md. Threads: torch's default (all cores) for both, one after the other; run it on a quiet machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from advlab.curve import curve_settings, measure_point  # noqa: E402
from advlab.data import ImageDataModule, to_unit_float  # noqa: E402
from advlab.evaluation.pipeline import run_evaluation  # noqa: E402
from advlab.evaluation.settings import EvaluationSettings  # noqa: E402
from advlab.figures import draw  # noqa: E402

EPS = 8 / 255
POINTS = (0.25, 0.5, 0.75, 1.0)
TARGETS = {"robust": 0.35, "clean": 0.67, "over_plain": 0.04}  # issue: >= 35% AA, >= 67% clean, +4 points


# ------------------------------------------------------------------------------------------ the plain script
def vgg(num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)):
    layers, c = [], 3
    for w in (32, 64, 128):  # conv-BN-ReLU twice, then halve the image
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 4 * 4, num_classes))
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return nn.Sequential(Lambda(lambda x: (x - mean) / std), model)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def crop_flip(x):
    n = len(x)
    padded = F.pad(x, (4, 4, 4, 4))
    i, j = torch.randint(0, 9, (n,)), torch.randint(0, 9, (n,))
    rows, cols = i[:, None] + torch.arange(32), j[:, None] + torch.arange(32)
    cols = torch.where((torch.rand(n) < 0.5)[:, None], cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def plain_fgsm_rs(x_train, y_train, minutes, on_point, seed=0, batch_size=128, lr=0.2, eps=EPS):
    """Train vgg() with FGSM-RS for `minutes` of wall time; on_point(model, seconds) at each share of POINTS."""
    torch.manual_seed(seed)
    model = vgg()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    budget, elapsed, points = 60 * minutes, 0.0, [p for p in POINTS if p < 1]
    while elapsed < budget:
        order = torch.randperm(len(x_train))
        for k in range(0, len(order) - batch_size + 1, batch_size):
            start = time.perf_counter()
            if points and elapsed >= points[0] * budget:  # measured while the clock is stopped
                on_point(model, elapsed)
                while points and elapsed >= points[0] * budget:
                    points.pop(0)
            if elapsed >= budget:
                break
            progress = elapsed / budget  # one-cycle on the clock: up for a quarter of the budget, then down
            for group in opt.param_groups:
                group["lr"] = lr * min(progress / 0.25, (1 - progress) / 0.75)
            idx = order[k:k + batch_size]
            x, y = crop_flip(x_train[idx].float() / 255), y_train[idx]
            delta = torch.empty_like(x).uniform_(-eps, eps).requires_grad_(True)
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta + 1.25 * eps * grad.sign()).clamp(-eps, eps).detach()
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            elapsed += time.perf_counter() - start
    on_point(model, elapsed)
    return model.eval()


# ------------------------------------------------------------------------------------------ the comparison
def train_split(data_root: str):
    """advlab's training split (45,000 images; the same 5,000 held out), as uint8 tensors."""
    dm = ImageDataModule("cifar10", root=data_root)
    dm.setup("fit")
    return dm.train_set.tensors


def test_set(data_root: str, n: int):
    dm = ImageDataModule("cifar10", root=data_root, max_test_images=n)
    dm.setup("test")
    x, y = dm.test_set.tensors
    return to_unit_float(x), y


def run_plain(data_root, minutes, n_curve, n_test, seed) -> dict:
    x_train, y_train = train_split(data_root)
    x_test, y_test = test_set(data_root, n_test)
    settings = curve_settings(EPS, ["autoattack-fast"], seed=0)
    rows = []

    def on_point(model, seconds):
        rows.append({"seconds": round(seconds, 1), **measure_point(model, x_test[:n_curve], y_test[:n_curve],
                                                                    settings)})
        print(f"  plain   {_row(rows[-1])}", flush=True)

    start = time.perf_counter()
    model = plain_fgsm_rs(x_train, y_train, minutes, on_point, seed=seed)
    wall = time.perf_counter() - start
    final = run_evaluation(model, x_test, y_test, EvaluationSettings(eps=[EPS], progress=False))
    return {"curve": rows, "wall_seconds": round(wall, 1), "clean": final.clean.to_dict(),
            "robust": final.worst_case(EPS).to_dict(), "checks": [c.to_dict() for c in final.checks]}


def run_advlab(data_root, minutes, n_curve, n_test, seed, out_dir: Path) -> dict:
    command = [sys.executable, "-m", "advlab", "+experiment=speedrun", f"speedrun.minutes={minutes}",
               f"training.curve.n_images={n_curve}", f"data.max_test_images={n_test}", f"seed={seed}",
               f"data.root={data_root}", "logger=csv", "trainer.enable_progress_bar=false", f"hydra.run.dir={out_dir}"]
    print("  " + " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "ADVLAB_QUIET": "1"})
    wall = time.perf_counter() - start
    res = json.loads((out_dir / "results.json").read_text())
    rows = res["training"]["curve"]["points"]
    for row in rows:
        print(f"  advlab  {_row(row)}", flush=True)
    return {"curve": rows, "wall_seconds": round(wall, 1), "clean": res["clean"],
            "robust": res["robustness"]["accuracy"]["worst_case"][-1], "checks": res["checks"],
            "trained_seconds": res["training"]["budget"]["trained_seconds"], "run_dir": str(out_dir)}


def _row(row) -> str:
    return (f"{row['seconds']:7.1f} s  clean {100 * row['clean']['value']:5.1f}%  "
            f"robust {100 * row['robust']['value']:5.1f}%  (measured in {row['eval_seconds']} s)")


def _pct(rate) -> str:
    lo, hi = rate["ci95"]
    return f"{100 * rate['value']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def report(res: dict) -> str:
    plain, ours = res["plain"], res["advlab"]
    lines = [f"robust speedrun: {res['minutes']} min of training each, L-inf 8/255, seed {res['seed']}, "
             f"{res['hardware']['cpu']} ({res['hardware']['threads']} threads), torch {res['hardware']['torch']}",
             "", "time-to-robustness (fast mode on the first test images, clock paused while measuring):",
             f"{'plain s':>9}{'plain rob':>11}{'advlab s':>10}{'advlab rob':>12}{'ratio':>7}"]
    for p, a in zip(plain["curve"], ours["curve"]):  # the same shares of the same budget: equal training time
        ratio = a["robust"]["value"] / max(p["robust"]["value"], 1e-9)
        lines.append(f"{p['seconds']:9.0f}{100 * p['robust']['value']:10.1f}%{a['seconds']:10.0f}"
                     f"{100 * a['robust']['value']:11.1f}%{ratio:7.2f}")
    n = ours["robust"]["n"]
    lines += ["", f"final models on {n} test images (worst case over FGSM, PGD, autoattack-fast):",
              f"  plain : clean {_pct(plain['clean'])}  robust {_pct(plain['robust'])}",
              f"  advlab: clean {_pct(ours['clean'])}  robust {_pct(ours['robust'])}"]
    gain = ours["robust"]["value"] - plain["robust"]["value"]
    checks = {"robust >= 35%": ours["robust"]["value"] >= TARGETS["robust"],
              "clean >= 67%": ours["clean"]["value"] >= TARGETS["clean"],
              "+4 points over plain": gain >= TARGETS["over_plain"]}
    lines.append(f"  advlab - plain: {100 * gain:+.1f} points robust; ratio "
                 f"{ours['robust']['value'] / max(plain['robust']['value'], 1e-9):.2f}")
    lines += [f"  {'PASS' if ok else 'MISS'} {name}" for name, ok in checks.items()]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of each side (default 10)")
    p.add_argument("--curve-images", type=int, default=200, help="test images of each curve point (default 200)")
    p.add_argument("--test-images", type=int, default=1000, help="test images of the final evaluations (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 minute each, 100 curve images, 200 test images")
    p.add_argument("--data", default=os.environ.get("ADVLAB_DATA") or str(REPO.parent / "shared/data/cifar10"))
    p.add_argument("--out", default=None, help="advlab's run folder (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--figure", default=None,
                   help="the two time-to-robustness curves on one figure (default: in the --out folder, if given)")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.curve_images, args.test_images = 1.0, 100, 200
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    res = {"minutes": args.minutes, "seed": args.seed,
           "hardware": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__}}
    print("plain PyTorch FGSM-RS:", flush=True)
    res["plain"] = run_plain(args.data, args.minutes, args.curve_images, args.test_images, args.seed)
    print("advlab +experiment=speedrun:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "speedrun"
        res["advlab"] = run_advlab(args.data, args.minutes, args.curve_images, args.test_images, args.seed, out)
        figure = Path(args.figure) if args.figure else (out / "time_to_robustness_vs_plain.png" if args.out else None)
        if figure:  # the two curves on the same axes
            draw.time_to_robustness({"plain PyTorch": res["plain"]["curve"], "advlab": res["advlab"]["curve"]},
                                    figure, title="speedrun vs plain:", eps=8 / 255)
    print(report(res), flush=True)
    if figure:
        print(f"figure: {figure}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
