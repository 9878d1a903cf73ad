"""How much faster advlab's accuracy-vs-eps curves are than attacking every image at every eps.

    python bench/eval_curve.py [--checkpoint outputs/.../model.pt] [--images 1000]

Measured in one run, on the same model, images and device (the CPU):
1. PGD-30 grid of 8 eps, naive (every image attacked at every eps) vs advlab's evaluation
   (only images still robust are attacked: clean-misclassified ones never, and an
   image fooled at a smaller eps is not attacked again at a larger one); the same
   measurement as item 3 of bench/attacks.py (make bench), on a longer grid;
2. FAB curve, one FAB run per eps vs one minimum-norm run for the whole curve.
Accuracies of both ways are printed next to each other: they must agree.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from advlab.checkpoint import load  # noqa: E402
from advlab.attacks import fab, minimal_norms  # noqa: E402
from advlab.data import load_split, to_unit_float  # noqa: E402
from advlab.evaluation import predict  # noqa: E402
from attacks import as_batches, eps_grid, train_quick_model  # noqa: E402 (bench/attacks.py)

EPS = [0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="an advlab model.pt (default: train a seed CNN briefly)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--fab-steps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("ADVLAB_QUIET", "1")  # no evaluation progress bar inside the timings
    root = os.environ.get("ADVLAB_DATA") or "data"
    if args.checkpoint:
        model = load(args.checkpoint)
    else:
        x_train, y_train = load_split(root, "train")
        model = train_quick_model("seed_cnn", x_train, y_train, images=20000)
    x, y = load_split(root, "test")
    x, y = x[: args.images], y[: args.images]
    print(f"{len(y)} test images, eps grid {EPS}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    cpu = torch.device("cpu")
    grid = eps_grid(model, as_batches(x, y, 500, cpu), EPS, steps=30, repeats=1, device=cpu)
    correct = grid["correct"]
    print("\n1. PGD-30 accuracy-vs-eps grid")
    print(f"   naive (all images, every eps): {grid['seconds']['naive']:7.1f} s   correct: {correct['naive_raw']}")
    print(f"   ... as a worst case over eps:                correct: {correct['naive_worst_case']}")
    print(f"   advlab (early exit + reuse):   {grid['seconds']['advlab']:7.1f} s   correct: {correct['advlab']}")
    print(f"   speed-up {grid['ratio']:.2f}x; identical to the naive worst case: {grid['identical']} "
          "(an image fooled at a smaller eps counts as fooled at larger ones)")

    xs, ys = to_unit_float(x[:200]), y[:200]
    per_eps, t_per_eps = timed(lambda: [int((predict(model, fab(model, xs, ys, steps=args.fab_steps, eps=e)) == ys)
                                            .sum()) for e in EPS])
    norms, t_once = timed(lambda: minimal_norms(model, xs, ys, steps=args.fab_steps))
    once = [int((norms > e).sum()) for e in EPS]
    print(f"\n2. FAB ({args.fab_steps} steps) curve on {len(ys)} images")
    print(f"   one FAB run per eps:           {t_per_eps:7.1f} s   correct: {per_eps}")
    print(f"   one minimum-norm run:          {t_once:7.1f} s   correct: {once}")
    print(f"   speed-up {t_per_eps / t_once:.2f}x; identical: {per_eps == once}")


if __name__ == "__main__":
    main()
