"""Fast AutoAttack vs standard AutoAttack on a zoo of small CPU-trained models of different kinds.

    python bench/evaluation.py [--quick] [--n 500] [--threads 1] [--models undefended,pgd-at,...]

Trains the zoo once (seeded; cached under bench/.cache/, which git should ignore) and then, per model,
on the first n CIFAR-10 test images, prints one row: clean accuracy, and the robust accuracy and
seconds of standard AutoAttack (advlab.attacks.autoattack), of fast mode
(advlab.attacks.fast.fast_autoattack), and of the original AutoAttack code when it is installed
(`pip install pyautoattack`), with fast/standard time and fast - standard accuracy in points.
The targets: fast at most 0.3 points above standard (or below it), in at most 1/4 of its time.

The zoo (the seed CNN unless said, each trained on 16k images in a few CPU-minutes all together):
  undefended     clean training
  fgsm-0.1       FGSM at eps 0.1 only (alpha 0): label leaking, a classic source of gradient masking
  pgd-at         PGD-5 adversarial training at 8/255 (random start)
  fast-at        FGSM-RS at 8/255 (Wong et al. 2020)
  lipschitz      1-Lipschitz AOL CNN with the Lipschitz margin loss, judged in L2 at 36/255
  quantized      the seed CNN behind a 4-level input rounding (trained behind it): gradient exactly 0
  purified       seed CNN behind a VAE (advlab purified model), judged with the posterior mean
                 (deterministic); its sampled form is randomised, skipped with the reason printed
--quick: 100 images and three models (undefended, fast-at, quantized), a few minutes once trained.

Timing: CPU seconds of this process (time.process_time), one thread by default (--threads), so a
busy machine does not inflate them; the three attacks of a model run one after the other in a
rotating order in this one process; compare ratios, not seconds across machines.
"""

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from advlab.attacks import Perturbation  # noqa: E402
from advlab.attacks.autoattack import autoattack  # noqa: E402
from advlab.attacks.fast import fast_autoattack  # noqa: E402
from advlab.data import load_split, to_unit_float  # noqa: E402
from advlab.defenses import MixedLoss  # noqa: E402
from advlab.defenses.lipschitz import LipschitzMarginLoss, certified_accuracy  # noqa: E402
from advlab.models import build_model  # noqa: E402

CACHE = REPO / "bench" / ".cache"
TRAIN_IMAGES = 16000
LINF_EPS = 8 / 255
L2_EPS = 36 / 255


class Quantized(nn.Module):
    """model(round(x * (levels - 1)) / (levels - 1)): inputs rounded to a few levels.

    The rounding's gradient is zero everywhere it exists, so every gradient attack sees a flat
    loss (a masked model); predictions still change when a perturbation moves pixels across a
    rounding threshold, which a black-box search such as Square finds.
    """

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


def _clean_loss(model, x, y, generator=None):
    out = model(x)
    return F.cross_entropy(out, y), {"clean": out}


def _purified_loss(model, x, y, generator=None):
    out = model(x)  # training mode: the classifier learns on reconstructions, the VAE from its ELBO
    return F.cross_entropy(out, y) + model.extra_loss(x), {"clean": out}


# name -> (build, training loss, optimiser, epochs, norm, eps, what it is)
def zoo_specs():
    return {
        "undefended": dict(model="seed_cnn", loss=lambda: _clean_loss, opt="sgd", epochs=6, norm="linf",
                           eps=LINF_EPS, about="clean training"),
        "fgsm-0.1": dict(model="seed_cnn", loss=lambda: MixedLoss(0.0, [Perturbation("fgsm", eps=0.1)]),
                         opt="sgd", epochs=5, norm="linf", eps=LINF_EPS, about="FGSM-trained at eps 0.1, alpha 0"),
        "pgd-at": dict(model="seed_cnn", loss=lambda: MixedLoss(0.0, [Perturbation(
            "pgd", eps=LINF_EPS, steps=5, step_size=2.5 * LINF_EPS / 5, random_start=True)]),
            opt="sgd", epochs=4, norm="linf", eps=LINF_EPS, about="PGD-5 AT at 8/255"),
        "fast-at": dict(model="seed_cnn", loss=lambda: MixedLoss(0.0, [Perturbation("fgsm-rs", eps=LINF_EPS)]),
                        opt="sgd", epochs=5, norm="linf", eps=LINF_EPS, about="FGSM-RS AT at 8/255"),
        "lipschitz": dict(model="lipschitz_cnn", loss=lambda: LipschitzMarginLoss(eps=L2_EPS), opt="adam",
                          epochs=5, norm="l2", eps=L2_EPS, about="1-Lipschitz AOL CNN, L2"),
        "quantized": dict(model="seed_cnn", loss=lambda: _clean_loss, opt="sgd", epochs=6, norm="linf",
                          eps=LINF_EPS, quantize=4, about="4-level input rounding (zero gradient)"),
        "purified": dict(model="purified", kwargs=dict(width=16, latent_dim=64), loss=lambda: _purified_loss,
                         opt="adam", epochs=3, norm="linf", eps=LINF_EPS, eval_attrs={"sample": False},
                         about="VAE purifier, posterior mean (deterministic)"),
    }


QUICK_MODELS = ("undefended", "fast-at", "quantized")


def _spec_key(name, spec) -> str:
    loss = spec["loss"]()
    described = {k: v for k, v in spec.items() if k not in ("about", "eval_attrs")}  # how it is trained
    described["loss"] = getattr(loss, "__name__", None) or repr(loss)
    text = json.dumps({"name": name, "train_images": TRAIN_IMAGES, **described}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build(name, spec) -> nn.Module:
    model = build_model(spec["model"], **spec.get("kwargs", {}))
    return Quantized(model, spec["quantize"]) if spec.get("quantize") else model


def train(name, spec, x, y, seed=0) -> tuple[nn.Module, float, float]:
    """Seeded minibatch training with the package's loss; returns (model in eval mode, wall s, CPU s)."""
    torch.manual_seed(seed)
    model = build(name, spec)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3) if spec["opt"] == "adam" else \
        torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = spec["loss"]()
    generator = torch.Generator().manual_seed(seed)
    steps = spec["epochs"] * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps)
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(spec["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for idx in order[: len(x) // 128 * 128].split(128):
            loss, _ = loss_fn(model, to_unit_float(x[idx]), y[idx], generator=generator)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    opt.zero_grad(set_to_none=True)
    return model.eval(), time.perf_counter() - start, time.process_time() - cpu


def for_evaluation(model, spec) -> nn.Module:
    """The model as judged: in eval mode, with the spec's evaluation attributes (e.g. a deterministic purifier)."""
    for attr, value in spec.get("eval_attrs", {}).items():
        setattr(model, attr, value)
    return model.eval()


def load_zoo(names, root, log=print) -> dict:
    """{name: model}, trained here the first time and cached in bench/.cache/ (keyed by the spec)."""
    specs = zoo_specs()
    CACHE.mkdir(parents=True, exist_ok=True)
    x = y = None
    zoo = {}
    for name in names:
        spec = specs[name]
        path = CACHE / f"{name}-{_spec_key(name, spec)}.pt"
        if path.is_file():
            model = build(name, spec)
            model.load_state_dict(torch.load(path, weights_only=True))
            zoo[name] = for_evaluation(model, spec)
            continue
        if x is None:
            x, y = load_split(root, "train")
            x, y = x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]
        model, seconds, cpu = train(name, spec, x, y)
        torch.save(model.state_dict(), path)
        log(f"# trained {name} ({spec['about']}) in {seconds:.0f} s ({cpu:.0f} CPU s) -> {path}")
        zoo[name] = for_evaluation(model, spec)
    return zoo


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy(model, x, y, batch=500) -> float:
    return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch))) / len(y)


def original_autoattack():
    """The AutoAttack class of the original code (import name `autoattack`, or `pyautoattack`), or None."""
    for module in ("autoattack", "pyautoattack"):
        try:
            return __import__(module).AutoAttack
        except (ImportError, AttributeError):
            continue
    return None


def run_original(cls, model, x, y, eps, norm, batch):
    import contextlib
    import inspect
    import io
    import logging
    import warnings

    aa = cls(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", device="cpu", seed=0)
    params = inspect.signature(aa.run_standard_evaluation).parameters
    kw = {"bs": batch} if "bs" in params else {"batch_size": batch}
    logging.getLogger("auto-attack").setLevel(logging.ERROR)  # its reliability flags: see our own
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = aa.run_standard_evaluation(x, y, **kw)
    return out[0] if isinstance(out, tuple) else out  # pyautoattack returns (x_adv, y_adv)


def _counts(labels) -> dict:
    counts = {}
    for label in labels:
        counts[label or "none (robust)"] = counts.get(label or "none (robust)", 0) + 1
    return counts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn):
    """fn's result and the CPU seconds this process spent on it (one thread: other load on the
    machine does not inflate them, as it would wall time)."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 images, three models (%s)" % ", ".join(QUICK_MODELS))
    p.add_argument("--n", type=int, default=None, help="test images (default 500, --quick 100)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--models", default=None, help="comma-separated subset of the zoo")
    p.add_argument("--no-original", action="store_true", help="skip the original AutoAttack code")
    p.add_argument("--data", default=os.environ.get("ADVLAB_DATA") or str(REPO.parent / "shared/data/cifar10"))
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.n or (100 if args.quick else 500)
    names = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else zoo_specs())
    unknown = set(names) - set(zoo_specs())
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; the zoo: {', '.join(zoo_specs())}")

    print(f"# command: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} {shlex.join([sys.executable, *sys.argv])}")
    print(f"# machine: {_cpu_name()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    zoo = load_zoo(names, args.data)
    xt, yt = load_split(args.data, "test")
    x, y = to_unit_float(xt[:n]), yt[:n]
    original = None if args.no_original else original_autoattack()
    if original is None:
        print("# original AutoAttack: not run" + ("" if args.no_original else " (pip install pyautoattack)"))
    specs = zoo_specs()
    header = (f"{'model':<11} {'norm':>4} {'eps':>6} {'n':>4} {'clean':>6} | {'AA':>6} {'s':>6} | {'fast':>6} "
              f"{'s':>6} {'esc':>4} | {'orig':>6} {'s':>6} | {'t f/AA':>6} {'f-AA pts':>8} {'ok':>3}")
    print(header)
    print("-" * len(header))
    rows, notes = [], []
    for i, name in enumerate(names):
        model, spec = zoo[name], specs[name]
        eps, norm = spec["eps"], spec["norm"]
        ways = {
            "aa": lambda: autoattack(model, x, y, eps, norm=norm, seed=0, return_stages=True),
            "fast": lambda: fast_autoattack(model, x, y, eps, norm=norm, seed=0, return_stages=True),
        }
        if original is not None:
            ways["orig"] = lambda: run_original(original, model, x, y, eps, norm, batch=n)
        order = list(ways)
        order = order[i % len(order):] + order[: i % len(order)]
        results = {}
        for way in order:
            out, seconds = timed(ways[way])
            results[way] = (out, seconds)
        clean = accuracy(model, x, y)
        (aa_adv, aa_stages), aa_s = results["aa"]
        aa_acc = accuracy(model, aa_adv, y)
        # Nothing left after APGD-CE, which both run alike: the time target does not apply.
        same_work = aa_acc == 0 and set(aa_stages) <= {"clean", "apgd-ce"}
        (fast_adv, info), fast_s = results["fast"]
        fast_acc = accuracy(model, fast_adv, y)
        escalated = sum(bool(r) for r in info.escalated)
        row = dict(model=name, norm=norm, eps=eps, n=n, clean=clean, aa=aa_acc, aa_s=aa_s,
                   fast=fast_acc, fast_s=fast_s, escalated=escalated, masked=info.masked,
                   broken_by=_counts(info.broken_by), escalated_because=_counts(r for r in info.escalated if r),
                   stage_seconds=info.seconds)
        if "orig" in results:
            row.update(orig=accuracy(model, results["orig"][0], y), orig_s=results["orig"][1])
        row["time_ratio"] = fast_s / row["aa_s"]
        row["diff_points"] = 100 * (fast_acc - aa_acc)
        row["time_target"] = None if same_work else row["time_ratio"] <= 0.25
        row["ok"] = row["time_target"] is not False and row["diff_points"] <= 0.3 + 1e-9
        rows.append(row)
        orig = f"{100 * row['orig']:6.1f} {row['orig_s']:6.1f}" if "orig" in row else f"{'-':>6} {'-':>6}"
        verdict = ("yes" if row["ok"] else "NO") + ("*" if same_work else "")
        print(f"{name:<11} {norm:>4} {eps:6.4f} {n:4d} {100 * clean:6.1f} | {100 * aa_acc:6.1f} {row['aa_s']:6.1f} | "
              f"{100 * fast_acc:6.1f} {fast_s:6.1f} {escalated:4d} | {orig} | {row['time_ratio']:6.3f} "
              f"{row['diff_points']:+8.1f} {verdict:>3}", flush=True)
        notes.append(f"{name}: fast broke " + ", ".join(f"{k} {v}" for k, v in row["broken_by"].items())
                     + "; seconds " + ", ".join(f"{k} {v:.1f}" for k, v in info.seconds.items())
                     + (f"; escalated {', '.join(f'{k} {v}' for k, v in row['escalated_because'].items())}"
                        if escalated else "") + ("; gradient masking detected" if info.masked else ""))
        if same_work:
            notes.append(f"{name}: * APGD-CE fooled every image for both, the same work: no time target")
        if norm == "l2" and hasattr(model, "lipschitz_constant"):
            notes.append(f"{name}: certified L2 accuracy at {eps:.4f}: "
                         f"{100 * certified_accuracy(model, x, y, eps).value:.1f} (a lower bound for every attack)")
    print("\n".join(f"# {line}" for line in notes))
    if "purified" in names:
        print("# purified (sampled code): skipped; its forward pass is random, so a robust accuracy needs EOT "
              "(autoattack version='rand'), which fast mode does not replace; judged above with the posterior mean")
    met = all(r["ok"] for r in rows)
    print(f"# targets (fast <= standard + 0.3 points, time <= 1/4 of standard) met on every model: {met}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
