"""The original AutoAttack on an advlab checkpoint, beside what advlab's run reported for it.

    python bench/original_autoattack.py RUN_DIR [--eps 0.01] [--n N] [--batch 500]

Loads RUN_DIR/model.pt and RUN_DIR/results.json, takes the first N test images of the run's data
root (default: as many as the run evaluated), and runs the original AutoAttack code (Croce & Hein,
`pip install pyautoattack`), standard version, seed 0, on them at --eps (default: every eps > 0 of
the run). Prints, per eps, the run's worst case and each of its attacks next to the original's robust
accuracy, each with its 95% interval: where advlab's worst case is above the original's, the run
over-claims robustness.
"""

import argparse
import contextlib
import io
import logging
import os
import sys
from pathlib import Path

import torch

from advlab.checkpoint import load
from advlab.data import load_split, to_unit_float
from advlab.results import Results
from advlab.stats import Rate


def original_robust(model, x, y, eps, norm, batch) -> int:
    import pyautoattack

    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        attack = pyautoattack.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps,
                                         version="standard", seed=0, device="cpu")
        x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=batch)
    with torch.no_grad():
        return sum(int((model(a).argmax(1) == b).sum()) for a, b in zip(x_adv.split(batch), y.split(batch)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--eps", type=float, action="append", help="radius (repeatable); default: the run's")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run = Path(args.run_dir)
    results = Results.load(run / "results.json")
    model = load(run / "model.pt").eval()
    root = results.config.get("data", {}).get("root") or os.environ.get("ADVLAB_DATA", "data")
    n = args.n or results.n_images
    xs, ys = load_split(root, "test")
    x, y = to_unit_float(xs[:n]), ys[:n].long()
    norm = results.norm
    print(f"# {sys.argv[0]} {run.name}: {n} test images, norm {norm}")
    for eps in args.eps or [e for e in results.eps if e > 0]:
        robust = original_robust(model, x, y, eps, norm, args.batch)
        theirs = Rate(robust, n)
        ours = ", ".join(f"{a} {results.robust(a, eps)}" for a in results.attacks)
        print(f"eps={eps:g}: advlab worst case {results.worst_case(eps)} ({ours}); original AutoAttack {theirs}")


if __name__ == "__main__":
    main()
