"""How much faster advlab's accuracy-vs-eps curves are than attacking every image at every eps.

    python bench/eval_curve.py [--checkpoint outputs/.../model.pt] [--images 1000]

Measured in one run, on the same model, images and device:
1. PGD-30 grid, naive (every image attacked at every eps) vs advlab's evaluation
   (only images still robust are attacked: clean-misclassified ones never, and an
   image fooled at a smaller eps is not attacked again at a larger one);
2. FAB curve, one FAB run per eps vs one minimum-norm run for the whole curve.
Accuracies of both ways are printed next to each other: they must agree.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advlab import load  # noqa: E402
from advlab.attacks import fab, minimal_norms, pgd  # noqa: E402
from advlab.attacks.registry import build_attacks  # noqa: E402
from advlab.data import load_split, to_unit_float  # noqa: E402
from advlab.evaluation import evaluate_robustness, predict  # noqa: E402
from advlab.models import build_model  # noqa: E402

EPS = [0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02]


def quick_model(root):
    """The seed CNN after 3 epochs on 20k training images, when no checkpoint is given."""
    torch.manual_seed(0)
    x, y = load_split(root, "train")
    model = build_model("seed_cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for idx in torch.randperm(20000).split(128):
            loss = F.cross_entropy(model(to_unit_float(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


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
    root = os.environ.get("ADVLAB_DATA") or "data"
    model = load(args.checkpoint) if args.checkpoint else quick_model(root)
    x, y = load_split(root, "test")
    x, y = to_unit_float(x[: args.images]), y[: args.images]
    n = len(y)
    print(f"{n} test images, eps grid {EPS}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    naive, t_naive = timed(lambda: [int((predict(model, pgd(model, x, y, e, steps=30)) == y).sum()) for e in EPS])
    loader = DataLoader(TensorDataset(x, y), batch_size=500)
    res, t_ours = timed(lambda: evaluate_robustness(model, loader, EPS, build_attacks(["pgd"], pgd_steps=30),
                                                    per_attack=False))
    ours = [r["successes"] for r in res["robustness"]["accuracy"]["worst_case"]]
    print("\n1. PGD-30 accuracy-vs-eps grid")
    print(f"   naive (all images, every eps): {t_naive:7.1f} s   correct: {naive}")
    print(f"   advlab (early exit + reuse):   {t_ours:7.1f} s   correct: {ours}")
    print(f"   speed-up {t_naive / t_ours:.2f}x; largest difference {max(abs(a - b) for a, b in zip(naive, ours))} "
          f"image(s) of {n} (advlab can only be lower: a point fooled at a smaller eps counts at larger ones)")

    xs, ys = x[:200], y[:200]
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
