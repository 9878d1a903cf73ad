"""How fast advlab's attacks, evaluation and adversarial training are, as ratios.

    python bench/attacks.py [--checkpoint outputs/.../model.pt | --model seed_cnn] [--device auto|cpu|cuda]
                            [--quick] [--json bench.json]          (or: make bench ARGS="--quick")

In one run, on the same model, test images and device (each device in turn):
1. advlab pgd vs torchattacks PGD (same eps, step size and steps, no random start); both robust
   accuracies, the predictions on every image and the pixel differences show the same work was done;
2. advlab pgd vs the floor, k forward+backward passes for the input gradient of the same batches,
   with what pgd spends beyond the floor op by op (torch.profiler, one batch); and the robust-accuracy evaluation (evaluate_robustness, which attacks only the images still
   classified correctly) vs torchattacks PGD on every image;
3. an accuracy-vs-eps grid (PGD-30): naive (every image attacked at every eps) vs advlab's
   evaluation (early exit and reuse across eps), with identical numbers;
4. training throughput (images/s) of clean, FGSM and PGD-10 training with the Lightning Trainer.

Timings are medians over --repeats runs. Each way is first warmed up on a few images; within a
repeat the ways run one after the other in a rotating order, so a slow spell of a shared
machine does not always fall on the same one; CUDA is synchronised before and after each.
--device auto measures on the CPU, and on the GPU too when there is one.
"""

import argparse
import copy
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# torch.profiler (item 2's profile) prints its start/stop lines on stderr; KINETO_LOG_LEVEL=0 shows them.
os.environ.setdefault("KINETO_LOG_LEVEL", "99")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchattacks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advlab.checkpoint import load  # noqa: E402
from advlab.attacks import NoPerturbation, Perturbation, pgd  # noqa: E402
from advlab.attacks.registry import build_attack  # noqa: E402
from advlab.classifier import AdversarialClassifier  # noqa: E402
from advlab.data import CIFAR10DataModule, load_split, to_unit_float  # noqa: E402
from advlab.evaluation import evaluate_robustness, predict  # noqa: E402
from advlab.io import write_json  # noqa: E402
from advlab.models import build_model  # noqa: E402

# Targets of the issue "Speed and scale": (key, what, bound, higher_is_better)
TARGETS = {
    "pgd_vs_torchattacks": ("advlab pgd speed-up over torchattacks PGD", 1.10, True),
    "pgd_vs_floor": ("advlab pgd time / floor (k x forward+backward)", 1.05, False),
    "robust_eval_vs_torchattacks": ("evaluate_robustness speed-up over torchattacks PGD + accuracy", 1.5, True),
    "eps_grid": ("eps-grid speed-up over naive", 3.0, True),
}
# The same pixels up to float rounding: the two implementations add and clip in different orders.
# An image can still differ by whole steps: torchattacks averages the loss over the batch and
# advlab sums it, so a gradient component at rounding level (~1e-8 of the image's largest) can
# take the other sign and the two paths part. Seen on 1-2 images in 1000 (eps 2/255, PGD-10);
# the same work is shown by identical predictions on every image.
SAME_IMAGE_TOL = 1e-6

FULL = dict(n_images=1000, steps=10, grid_steps=30, repeats=3, train_batches=20, model_images=20000)
QUICK = dict(n_images=200, steps=10, grid_steps=10, repeats=1, train_batches=3, model_images=5000)


# ---------------------------------------------------------------- setup


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="an advlab model.pt (default: train --model here for a few seconds)")
    p.add_argument("--model", default="seed_cnn", help="registry name of the model trained here (default seed_cnn)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the CPU, and the GPU too when there is one")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, the target machine's cores)")
    p.add_argument("--n-images", type=int,
                   help=f"first N test images (default {FULL['n_images']}, quick {QUICK['n_images']})")
    p.add_argument("--batch-size", type=int, default=500, help="attack and evaluation batch size (default 500)")
    p.add_argument("--steps", type=int, help=f"k of PGD-k in 1 and 2 (default {FULL['steps']})")
    p.add_argument("--grid-steps", type=int,
                   help=f"PGD steps of the eps grid (default {FULL['grid_steps']}, quick {QUICK['grid_steps']})")
    p.add_argument("--eps", type=float, default=2 / 255,
                   help="L-inf eps of items 1, 2 and of the training perturbations (default 2/255)")
    p.add_argument("--step-size", type=float, help="PGD step size (default eps / 4, advlab's default)")
    p.add_argument("--grid", type=float, nargs="+", default=[1 / 255, 2 / 255, 4 / 255, 8 / 255],
                   help="the eps of the grid (default 1/255 2/255 4/255 8/255)")
    p.add_argument("--repeats", type=int, help=f"timed repeats, median reported (default {FULL['repeats']}, quick 1)")
    p.add_argument("--train-batches", type=int,
                   help=f"timed training batches per kind, after 1 warm-up batch "
                        f"(default {FULL['train_batches']}, quick {QUICK['train_batches']})")
    p.add_argument("--train-batch-size", type=int, default=128, help="training batch size (default 128, the config's)")
    p.add_argument("--quick", action="store_true", help="CI size: well under a minute on 2 cores")
    p.add_argument("--json", metavar="OUT", help="also write every number to OUT (JSON, written atomically)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.step_size = args.eps / 4 if args.step_size is None else args.step_size
    for name in ("n_images", "batch_size", "steps", "grid_steps", "repeats", "train_batches", "train_batch_size",
                 "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.eps <= 1 or not 0 < args.step_size <= 1 or not all(0 < e <= 1 for e in args.grid):
        p.error("--eps, --step-size and --grid must lie in (0, 1] (pixel units, images in [0, 1])")
    return args


def devices(wanted: str) -> list[torch.device]:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is available to torch")
    if wanted == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(wanted)]


def hardware(devs) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if any(d.type == "cuda" for d in devs) else None,
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
    }


def train_quick_model(name: str, x_train: torch.Tensor, y_train: torch.Tensor, images: int, seed: int = 0):
    """`name` from the registry after one seeded Adam epoch on the first `images` training images
    (uint8), on the CPU: a few seconds, and a model that is right often enough (~35-40% for the
    seed CNN) for early exit not to look better than it would on a real one."""
    torch.manual_seed(seed)
    model = build_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for idx in torch.randperm(min(images, len(y_train))).split(128):
        loss = F.cross_entropy(model(to_unit_float(x_train[idx])), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@torch.no_grad()
def output_kind(model, x) -> str:
    """torchattacks applies cross-entropy to what the model returns, as if to logits. On
    log-probabilities that is the same loss (log_softmax of log-probabilities changes nothing);
    item 1 checks that the predictions agree either way."""
    lse = torch.logsumexp(model(x), dim=1)
    return "log-probabilities" if bool((lse.abs() < 1e-4).all()) else "logits"


def as_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, device) -> list:
    """The test images as float batches on the device, ready before any clock starts: every
    way below is timed on the same list (evaluate_robustness takes any iterable of batches)."""
    return [(to_unit_float(xb.to(device)), yb.to(device)) for xb, yb in zip(x.split(batch_size), y.split(batch_size))]


# ---------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARMUP_IMAGES = 64


def measure(ways: dict, batches: list, repeats: int, device) -> tuple[dict, dict]:
    """Median seconds of each way(batches) and its output from the last repeat.

    Each way is first run once on a few images (lazy initialisation, allocator, CUDA context
    and kernels; a few images so that a small --quick run is not doubled), then the ways run
    `repeats` times in a rotating order."""
    x, y = batches[0]
    for fn in ways.values():
        fn([(x[:WARMUP_IMAGES], y[:WARMUP_IMAGES])])
    sync(device)
    names = list(ways)
    times = {name: [] for name in names}
    outputs = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            outputs[name] = ways[name](batches)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def floor_pass(model, x, y, k: int) -> None:
    """k forward+backward passes for the input gradient of the batch: what any k-step gradient
    attack must spend, with nothing else (no step, no projection, no checks)."""
    for _ in range(k):
        x_req = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_req), y, reduction="sum")
        torch.autograd.grad(loss, x_req)


# ---------------------------------------------------------------- the four measurements


def single_eps(model, batches, args, device) -> dict:
    """Items 1 and 2: one eps, PGD-k, advlab vs torchattacks vs the floor, and the evaluations."""
    eps, k, alpha = args.eps, args.steps, args.step_size
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=k, random_start=False)
    attack = build_attack("pgd", steps=k, step_size=alpha)

    def ta_accuracy(bs):
        return sum(int((predict(model, ta(x, y)) == y).sum()) for x, y in bs)

    ways = {
        "advlab_pgd": lambda bs: [pgd(model, x, y, eps, steps=k, step_size=alpha, random_start=False) for x, y in bs],
        "torchattacks_pgd": lambda bs: [ta(x, y) for x, y in bs],
        "floor": lambda bs: [floor_pass(model, x, y, k) for x, y in bs],
        "advlab_evaluate": lambda bs: evaluate_robustness(model, bs, [eps], {"pgd": attack}, per_attack=False,
                                                          perturbed=False, progress=False),
        "torchattacks_evaluate": ta_accuracy,
    }
    t, out = measure(ways, batches, args.repeats, device)

    n = sum(len(y) for _, y in batches)
    ours, theirs = out["advlab_pgd"], out["torchattacks_pgd"]
    labels = torch.cat([y for _, y in batches])
    pred_ours = torch.cat([predict(model, a) for a in ours])
    pred_theirs = torch.cat([predict(model, b) for b in theirs])
    gap = torch.cat([(a - b).abs().flatten(1) for a, b in zip(ours, theirs)])
    eval_ours = out["advlab_evaluate"].robustness.rates["worst_case"][0].successes
    clean = out["advlab_evaluate"].clean.successes
    return {
        "pgd_vs_torchattacks": {
            "seconds": {"advlab": t["advlab_pgd"], "torchattacks": t["torchattacks_pgd"]},
            "ratio": t["torchattacks_pgd"] / t["advlab_pgd"],
            "robust_correct": {"advlab": int((pred_ours == labels).sum()),
                               "torchattacks": int((pred_theirs == labels).sum())},
            "n": n,
            "predictions_differ": int((pred_ours != pred_theirs).sum()),
            "max_abs_pixel_difference": float(gap.max()),
            "pixels_differing": int((gap > SAME_IMAGE_TOL).sum()),
            "images_differing": int((gap > SAME_IMAGE_TOL).any(1).sum()),
            "same_predictions": bool((pred_ours == pred_theirs).all()),
        },
        "pgd_vs_floor": {
            "seconds": {"advlab": t["advlab_pgd"], "floor": t["floor"], "torchattacks": t["torchattacks_pgd"]},
            "ratio": t["advlab_pgd"] / t["floor"],
            # No PGD can beat the floor, so torchattacks / floor bounds the speed-up over torchattacks.
            "torchattacks_ratio": t["torchattacks_pgd"] / t["floor"],
        },
        "robust_eval_vs_torchattacks": {
            "seconds": {"advlab": t["advlab_evaluate"], "torchattacks": t["torchattacks_evaluate"]},
            "ratio": t["torchattacks_evaluate"] / t["advlab_evaluate"],
            "robust_correct": {"advlab": eval_ours, "torchattacks": out["torchattacks_evaluate"]},
            "clean_correct": clean,
            "n": n,
        },
    }


def profile_overhead(model, batch, args, device) -> dict:
    """What advlab pgd spends beyond the floor, op by op: torch.profiler on one batch, PGD-k
    and the floor's k passes. Only ops pgd calls more often than the floor are listed (the
    step, projection and checks); ops both call (the model) differ by noise alone."""
    from torch.profiler import ProfilerActivity, profile

    x, y = batch
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timed = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    runs = {"advlab_pgd": lambda: pgd(model, x, y, args.eps, steps=args.steps, step_size=args.step_size),
            "floor": lambda: floor_pass(model, x, y, args.steps)}
    ops = {}
    for name, fn in runs.items():
        fn()
        with profile(activities=activities) as prof:
            fn()
            sync(device)
        ops[name] = {e.key: (e.count, getattr(e, timed, 0.0)) for e in prof.key_averages()}
    floor_total = sum(t for _, t in ops["floor"].values())
    if floor_total <= 0:
        raise RuntimeError(f"torch.profiler recorded no {timed} for the floor on {device}; run with KINETO_LOG_LEVEL=0")
    extra = []
    for key, (count, t) in ops["advlab_pgd"].items():
        floor_count, floor_t = ops["floor"].get(key, (0, 0.0))
        if count > floor_count and t > floor_t:
            extra.append({"op": key, "extra_calls": count - floor_count,
                          "percent_of_floor": 100 * (t - floor_t) / floor_total})
    extra.sort(key=lambda r: -r["percent_of_floor"])
    return {"timer": "device" if device.type == "cuda" else "cpu", "images": len(y), "steps": args.steps,
            "floor_ms": floor_total / 1e3, "extra_percent_of_floor": sum(r["percent_of_floor"] for r in extra),
            "extra_ops": extra}


def eps_grid(model, batches, grid, steps, repeats, device) -> dict:
    """Item 3: PGD-`steps` accuracy at every eps of `grid`, naive vs advlab's evaluation.

    Naive attacks every image at every eps. advlab attacks only images classified correctly so
    far, in increasing eps, and counts an image fooled at a smaller eps as fooled at larger ones
    (its adversarial point lies in every larger ball): the per-image worst case. The naive
    per-image results give that same worst case for free (a running AND over eps), which must
    equal advlab's exactly; the naive raw counts are shown too (they can only be higher)."""
    grid = sorted(grid)
    attack = {"pgd": build_attack("pgd", steps=steps)}

    def naive(bs):
        clean = torch.cat([predict(model, x) == y for x, y in bs])
        per_eps = [torch.cat([predict(model, pgd(model, x, y, e, steps=steps)) == y for x, y in bs]) for e in grid]
        return clean, per_eps

    ways = {
        "naive": naive,
        "advlab": lambda bs: evaluate_robustness(model, bs, grid, attack, per_attack=False, perturbed=False,
                                                 progress=False),
    }
    t, out = measure(ways, batches, repeats, device)
    clean, per_eps = out["naive"]
    worst, running = [], clean.clone()
    for robust in per_eps:
        running &= robust
        worst.append(int(running.sum()))
    ours = [r.successes for r in out["advlab"].robustness.rates["worst_case"]]
    return {
        "eps": grid,
        "steps": steps,
        "n": len(clean),
        "seconds": {"naive": t["naive"], "advlab": t["advlab"]},
        "ratio": t["naive"] / t["advlab"],
        "correct": {"naive_raw": [int(r.sum()) for r in per_eps], "naive_worst_case": worst, "advlab": ours},
        "identical": worst == ours,
    }


class _Stopwatch(pl.Callback):
    """Wall time from the start of the first timed batch to the end of the last one: the
    training step, the optimizer step, data loading and Lightning's own work between them."""

    def __init__(self, warmup: int, device):
        self.warmup, self.device = warmup, device
        self.start = self.end = None
        self.images = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.images += len(batch[1])
            sync(self.device)
            self.end = time.perf_counter()


def training_throughput(model, datamodule, args, device) -> dict:
    """Item 4: images/s of Trainer.fit as users run it (no logger, no checkpointing), one
    warm-up batch then --train-batches timed ones, for clean, FGSM and PGD-10 training
    (alpha = 0: the adversarial loss only, the seed study's defence), median over --repeats."""
    kinds = {
        "clean": (NoPerturbation(), 1.0),
        "fgsm": (Perturbation("fgsm", eps=args.eps), 0.0),
        "pgd10": (Perturbation({"name": "pgd", "steps": 10, "random_start": True}, eps=args.eps), 0.0),
    }
    rates = {name: [] for name in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            names = list(kinds)[r % 3:] + list(kinds)[: r % 3]
            for name in names:
                perturbation, alpha = kinds[name]
                watch = _Stopwatch(warmup=1, device=device)
                trainer = pl.Trainer(
                    accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                    limit_train_batches=1 + args.train_batches, limit_val_batches=0, num_sanity_val_steps=0,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, inference_mode=False, callbacks=[watch], default_root_dir=tmp,
                )
                module = AdversarialClassifier(copy.deepcopy(model).cpu(), perturbation, alpha=alpha)
                trainer.fit(module, datamodule=datamodule)
                rates[name].append(watch.images / (watch.end - watch.start))
    return {
        "batch_size": args.train_batch_size,
        "timed_batches": args.train_batches,
        "eps": args.eps,
        "images_per_second": {name: statistics.median(v) for name, v in rates.items()},
    }


def verdicts(res: dict) -> list[dict]:
    """PASS/MISS per target. The pgd target also needs the same outcome on every image; the
    evaluation target an accuracy no higher than torchattacks'; the grid target identical numbers."""
    checks = {
        "pgd_vs_torchattacks": res["pgd_vs_torchattacks"]["same_predictions"],
        "pgd_vs_floor": True,
        "robust_eval_vs_torchattacks": (res["robust_eval_vs_torchattacks"]["robust_correct"]["advlab"]
                                        <= res["robust_eval_vs_torchattacks"]["robust_correct"]["torchattacks"]),
        "eps_grid": res["eps_grid"]["identical"],
    }
    out = []
    for key, (what, bound, higher) in TARGETS.items():
        ratio = res[key]["ratio"]
        met = (ratio >= bound) if higher else (ratio <= bound)
        out.append({"key": key, "what": what, "ratio": ratio, "target": f"{'>=' if higher else '<='} {bound}",
                    "condition_met": bool(checks[key]), "pass": bool(met and checks[key])})
    return out


# ---------------------------------------------------------------- report


def _pct(c: int, n: int) -> str:
    return f"{100 * c / n:5.1f}% ({c}/{n})"


def report(dev, res: dict, args) -> str:
    m, a, f, e, g, tr, pr = (res["model"], res["pgd_vs_torchattacks"], res["pgd_vs_floor"],
                             res["robust_eval_vs_torchattacks"], res["eps_grid"], res["training_throughput"],
                             res["profile"])
    k, n = args.steps, a["n"]
    lines = [
        f"\n=== {dev.type.upper()}{'' if dev.type == 'cpu' else ' ' + str(res['hardware_name'])} ===",
        f"model {m['description']}, returns {m['outputs']}; {n} test images, clean accuracy "
        f"{_pct(m['clean_correct'], n)}",
        f"batch {args.batch_size}, eps {args.eps:.5g}, step size {args.step_size:.5g}, "
        f"median of {args.repeats} repeat(s) after a warm-up",
        "",
        f"{'':4}{'measurement':52}{'seconds':>10}  result",
        f"1.  advlab pgd, PGD-{k}{'':36}{a['seconds']['advlab']:10.3f}  robust "
        f"{_pct(a['robust_correct']['advlab'], n)}",
        f"    torchattacks PGD, PGD-{k}{'':30}{a['seconds']['torchattacks']:10.3f}  robust "
        f"{_pct(a['robust_correct']['torchattacks'], n)}",
        f"    same work: {a['predictions_differ']} of {n} prediction(s) differ; max |x_advlab - x_torchattacks| = "
        f"{a['max_abs_pixel_difference']:.2g}, {a['images_differing']} image(s) ({a['pixels_differing']} pixels) "
        f"differ by > {SAME_IMAGE_TOL:g}",
        f"2.  floor: {k} x forward+backward to the input{'':16}{f['seconds']['floor']:10.3f}  "
        f"advlab / floor {f['ratio']:.3f}, torchattacks / floor {f['torchattacks_ratio']:.3f}",
        f"    profile ({pr['images']} images, {pr['timer']} time): pgd's ops beyond the floor's cost "
        f"{pr['extra_percent_of_floor']:.1f}% of it: "
        + ", ".join(f"{r['op'].removeprefix('aten::')} x{r['extra_calls']} {r['percent_of_floor']:.1f}%"
                    for r in pr["extra_ops"][:8]),
        f"    advlab evaluate_robustness (early exit){'':11}{e['seconds']['advlab']:10.3f}  robust "
        f"{_pct(e['robust_correct']['advlab'], n)}, attacked {e['clean_correct']}/{n}",
        f"    torchattacks PGD on every image + accuracy{'':8}{e['seconds']['torchattacks']:10.3f}  robust "
        f"{_pct(e['robust_correct']['torchattacks'], n)}",
        f"3.  eps grid {', '.join(f'{x:.4g}' for x in g['eps'])}, PGD-{g['steps']}",
        f"    naive (every image at every eps){'':18}{g['seconds']['naive']:10.3f}  raw {g['correct']['naive_raw']}, "
        f"worst case {g['correct']['naive_worst_case']}",
        f"    advlab evaluate_robustness{'':24}{g['seconds']['advlab']:10.3f}  worst case {g['correct']['advlab']}"
        f"  identical: {g['identical']}",
        f"4.  training throughput, Lightning fit, batch {tr['batch_size']}, {tr['timed_batches']} timed batches: "
        + ", ".join(f"{name} {v:.0f} img/s" for name, v in tr["images_per_second"].items()),
        "",
        f"{'target':68}{'ratio':>7}  {'goal':8}  result",
    ]
    for v in res["targets"]:
        note = "" if v["condition_met"] else "  (condition not met: see above)"
        lines.append(f"{v['what']:68}{v['ratio']:7.2f}  {v['target']:8}  {'PASS' if v['pass'] else 'MISS'}{note}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ADVLAB_QUIET", "1")  # no evaluation progress bar inside the timings
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    devs = devices(args.device)
    root = os.environ.get("ADVLAB_DATA") or "data"

    datamodule = CIFAR10DataModule(root=root, batch_size=args.train_batch_size)
    datamodule.setup("fit")
    if args.checkpoint:
        model, description = load(args.checkpoint), f"from {args.checkpoint}"
    else:
        x_train, y_train = datamodule.train_set.tensors
        model = train_quick_model(args.model, x_train, y_train, args.model_images)
        description = f"{args.model}, trained here (seed 0, one Adam epoch on {args.model_images} training images)"
    x, y = load_split(root, "test")
    x, y = x[: args.n_images], y[: args.n_images]
    outputs = output_kind(model, to_unit_float(x[:64]))

    hw = hardware(devs)
    print(f"advlab attack benchmark: {hw['cpu']} ({hw['cpu_cores_usable']} cores usable, "
          f"{hw['torch_threads']} torch threads, load {hw['load_average_1min']}), GPU {hw['gpu'] or 'none used'}; "
          f"torch {hw['torch']}, torchattacks {hw['torchattacks']}, Lightning {hw['pytorch_lightning']}")
    results = {}
    for dev in devs:
        dmodel = copy.deepcopy(model).to(dev).eval()
        batches = as_batches(x, y, args.batch_size, dev)
        res = single_eps(dmodel, batches, args, dev)
        res["profile"] = profile_overhead(dmodel, batches[0], args, dev)
        res["eps_grid"] = eps_grid(dmodel, batches, args.grid, args.grid_steps, args.repeats, dev)
        res["training_throughput"] = training_throughput(dmodel, datamodule, args, dev)
        res["model"] = {"description": description, "outputs": outputs,
                        "clean_correct": res["robust_eval_vs_torchattacks"]["clean_correct"], "n": len(y)}
        res["hardware_name"] = hw["cpu"] if dev.type == "cpu" else torch.cuda.get_device_name(dev)
        res["targets"] = verdicts(res)
        print(report(dev, res, args), flush=True)
        results[dev.type] = res

    out = {"command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)], "hardware": hw,
           "settings": {k: v for k, v in vars(args).items() if k not in ("json",)}, "results": results}
    if args.json:
        write_json(args.json, out)
        print(f"\nwrote {args.json}")
    return out


if __name__ == "__main__":
    main()
