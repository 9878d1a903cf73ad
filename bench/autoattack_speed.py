"""Standard AutoAttack before and after the speed work: same images, same seed, interleaved.

    python bench/autoattack_speed.py [--n 500] [--repeats 2] [--old-ref 0cdc5a8 | --old-dir DIR]
                                     [--models plain,adv] [--eps 8,2] [--zoo DIR] [--bf16]

The models (trained once, their state_dicts cached under --zoo):
  plain: advlab's seed_cnn, 2 epochs of SGD (lr 0.05, momentum 0.9, batch 128) on 10k training images;
  adv:   the same network trained on PGD-3 images (L-inf eps 8/255, random start) for 6 epochs.
The OLD implementation is advlab/attacks/{_core,losses,apgd,fab,square,autoattack}.py as they are at
--old-ref (read with `git show`; default 0cdc5a8, the last commit before the speed work, whose attacks
take seed=int and draw the same random numbers on the CPU as today's make_generator) or in --old-dir,
imported as a private package; the NEW one is the working tree's advlab.attacks.autoattack. Both run with seed=0 on the same first --n test
images, in the order OLD NEW NEW OLD ... (--repeats pairs), on one CPU thread; the table gives the
median CPU seconds of the process (time.process_time), which other load on the machine does not inflate. Robust accuracy is counted by one forward pass of the returned images, and each
returned batch is checked to lie in the eps-ball and in [0, 1].
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advlab.data import load_split, to_unit_float  # noqa: E402
from advlab.models import build_model  # noqa: E402

DATA = os.environ.get("ADVLAB_DATA") or str(ROOT.parent / "shared" / "data" / "cifar10")
OLD_FILES = ("_core", "losses", "apgd", "fab", "square", "autoattack")


# ---------------------------------------------------------------- the models


def _train(model, x, y, epochs, lr, adv_eps=0.0, pgd_steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        model.train()
        for i in range(0, len(x), 128):
            xb, yb = x[order[i:i + 128]], y[order[i:i + 128]]
            if adv_eps > 0:
                xb = _pgd(model, xb, yb, adv_eps, pgd_steps, gen)
            loss = F.nll_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def _pgd(model, x, y, eps, steps, gen):
    """PGD with a random start, step 2.5 eps / steps (training only)."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.nll_loss(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def zoo(cache: str, names=("plain", "adv")) -> dict:
    """{name: seed_cnn in eval mode}, trained on the first 10k training images once and cached."""
    os.makedirs(cache, exist_ok=True)
    models = {}
    x = y = None
    for name in names:
        path = Path(cache) / f"{name}.pt"
        torch.manual_seed(0)
        model = build_model("seed_cnn")
        if path.exists():
            model.load_state_dict(torch.load(path))
        else:
            if x is None:
                xs, ys = load_split(DATA, "train")
                x, y = to_unit_float(xs[:10000]), ys[:10000].long()
            if name == "plain":
                _train(model, x, y, epochs=2, lr=0.05)
            elif name == "adv":
                _train(model, x, y, epochs=6, lr=0.05, adv_eps=8 / 255)
            else:
                raise ValueError(f"unknown model {name!r}")
            torch.save(model.state_dict(), path)
        models[name] = model.eval()
    return models


def test_images(n: int):
    xs, ys = load_split(DATA, "test")
    return to_unit_float(xs[:n]), ys[:n].long()


# ---------------------------------------------------------------- the old implementation


def load_old(ref: str | None = "0cdc5a8", directory: str | None = None):
    """The old attack files as a private package (imports rewritten); returns its autoattack module."""
    pkg = Path(tempfile.mkdtemp(prefix="aa_old_")) / "aa_old_attacks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in OLD_FILES:
        if directory:
            text = (Path(directory) / f"{name}.py").read_text()
        else:
            text = subprocess.run(["git", "show", f"{ref}:advlab/attacks/{name}.py"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
        text = text.replace("from advlab.attacks import _core", "from aa_old_attacks import _core")
        text = text.replace("advlab.attacks.", "aa_old_attacks.")
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("aa_old_attacks.autoattack")


# ---------------------------------------------------------------- the comparison


def _check_and_count(model, x, y, x_adv, eps):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().amax() <= eps + 1e-6, "outside the eps-ball"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "outside [0, 1]"
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old-ref", default="0cdc5a8")
    parser.add_argument("--old-dir", default=None)
    parser.add_argument("--models", default="plain,adv")
    parser.add_argument("--eps", default="8,2", help="L-inf radii in 1/255 units, comma separated")
    parser.add_argument("--zoo", default=str(ROOT / "bench" / ".cache" / "aa_speed"))
    parser.add_argument("--bf16", action="store_true", help="also time the new code with bf16=True")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    from advlab.attacks.autoattack import autoattack as new_aa
    old_aa = load_old(args.old_ref, args.old_dir).autoattack
    models = zoo(args.zoo, tuple(args.models.split(",")))
    x, y = test_images(args.n)
    old_label = f"old={args.old_dir or args.old_ref}"
    print(f"{old_label} new=working tree, n={args.n}, seed=0, 1 thread, repeats={args.repeats}")
    header = f"{'model':6} {'eps':>6} {'clean':>6} {'rob old':>8} {'rob new':>8} {'diff':>5} {'s old':>8} {'s new':>8} {'ratio':>6}"
    if args.bf16:
        header += f" {'rob bf16':>9} {'s bf16':>8}"
    print(header, flush=True)
    for name, model in models.items():
        with torch.no_grad():
            clean = int((model(x).argmax(1) == y).sum())
        for e in args.eps.split(","):
            eps = float(e) / 255
            ways = {"old": lambda m=model: old_aa(m, x, y, eps, version="standard", seed=0),
                    "new": lambda m=model: new_aa(m, x, y, eps, version="standard", seed=0)}
            if args.bf16:
                ways["bf16"] = lambda m=model: new_aa(m, x, y, eps, version="standard", seed=0, bf16=True)
            times, robust = {k: [] for k in ways}, {k: set() for k in ways}
            for r in range(args.repeats):
                order = list(ways) if r % 2 == 0 else list(reversed(ways))
                for k in order:
                    t0 = time.process_time()  # CPU seconds (one thread): other load does not inflate them
                    x_adv = ways[k]()
                    times[k].append(time.process_time() - t0)
                    robust[k].add(_check_and_count(model, x, y, x_adv, eps))
            med = {k: statistics.median(v) for k, v in times.items()}
            rob = {k: sorted(v) for k, v in robust.items()}
            line = (f"{name:6} {e + '/255':>6} {clean:>6} {rob['old'][0]:>8} {rob['new'][0]:>8} "
                    f"{rob['new'][0] - rob['old'][0]:>+5} {med['old']:>8.1f} {med['new']:>8.1f} "
                    f"{med['old'] / med['new']:>5.2f}x")
            if args.bf16:
                line += f" {rob['bf16'][0]:>9} {med['bf16']:>8.1f}"
            if any(len(v) > 1 for v in rob.values()):
                line += f"  (not repeatable: {rob})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
