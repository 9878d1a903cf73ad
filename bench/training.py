"""Training throughput: advlab's Lightning run against a plain PyTorch loop doing the same work.

    python bench/training.py [--quick] [--batches 150] [--repeats 3] [--threads 1] [--kinds clean,fgsm]

Both sides train the same model (the run's config: the seed CNN), from the same initial weights, on the
same uint8 CIFAR-10 batches (data.batch_size 128, shuffled) turned into [0, 1] floats the same way, with
the same loss object (clean cross-entropy, or the design card's FGSM mix at eps 0.01), optimizer and
one-cycle schedule:

  lightning  advlab.training.train_model: what `python -m advlab` runs, with its default callbacks
             (best checkpoint, learning-rate monitor, guard), its progress bar and a CSV logger;
  plain      for x, y in loader: loss(model, x, y); zero_grad; backward; step; scheduler step.

Validation is off on both sides (it is not training throughput). Each side is timed from its 6th batch
to its last (steady state: the first batches pay allocation and first-call costs) in CPU seconds of this
process (time.process_time), so other load on the machine inflates neither; the sides alternate in a
rotating order, and the median over --repeats is printed with the ratio lightning / plain. Target:
at least 0.9.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import advlab.training as training  # noqa: E402
from advlab.build import build_classifier  # noqa: E402
from advlab.data import to_unit_float  # noqa: E402
from advlab.tracking import make_logger  # noqa: E402

SKIPPED = 5  # batches before the timed window
TARGET = 0.9
KINDS = {  # the run's overrides for each kind of training
    "clean": [],
    "fgsm": ["+experiment=fgsm_defense", "eps=0.01"],
}


def run_config(kind: str, data_root: str, batches: int):
    overrides = [*KINDS[kind], f"data.root={data_root}", "logger=csv", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                 f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


class _Stamps(pl.Callback):
    """CPU time at the start of every training batch."""

    def __init__(self):
        self.times = []

    def on_train_batch_start(self, *args):
        self.times.append(time.process_time())


def lightning(cfg, datamodule) -> float:
    """Seconds per batch of train_model (the run's Trainer, callbacks, progress bar and logger)."""
    stamps = _Stamps()
    plain_callbacks = training.training_callbacks
    training.training_callbacks = lambda *a: [*plain_callbacks(*a), stamps]
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            training.train_model(cfg, datamodule, Path(run_dir), make_logger(cfg, Path(run_dir), "bench"))
    finally:
        training.training_callbacks = plain_callbacks
    return _per_batch(stamps.times)


def _per_batch(starts: list[float]) -> float:
    """Seconds per batch from the batches' start times, after the first SKIPPED: from the first timed
    batch's start to the last one's, len(window) - 1 whole batches (--batches > SKIPPED + 1)."""
    window = starts[SKIPPED:]
    return (window[-1] - window[0]) / (len(window) - 1)


def plain(cfg, datamodule) -> float:
    """Seconds per batch of a hand-written loop over the same model, loss, optimizer, schedule and data."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_classifier(cfg)  # the same model and loss objects the run would build
    model, loss_fn = module.model.train(), module.loss
    optimizer = module.optimizer_factory(model.parameters())
    steps = cfg.trainer.limit_train_batches
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                    total_steps=steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    datamodule.setup("fit")
    times = []
    for i, (x, y) in enumerate(datamodule.train_dataloader()):
        times.append(time.process_time())
        if i == steps:
            break
        loss, _ = loss_fn(model, to_unit_float(x), y, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return _per_batch(times)


def measure(kinds, data_root: str, batches: int, repeats: int) -> dict:
    sides = {"plain": plain, "lightning": lightning}
    per_batch = {kind: {side: [] for side in sides} for kind in kinds}
    for r in range(repeats):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for kind in kinds:
            cfg = run_config(kind, data_root, batches)
            batch_size = cfg.data.batch_size
            for side in order:
                datamodule = instantiate(cfg.data)
                per_batch[kind][side].append(sides[side](cfg, datamodule))
    rows = {}
    for kind, seconds in per_batch.items():
        rate = {side: batch_size / statistics.median(v) for side, v in seconds.items()}
        rows[kind] = {"images_per_second": rate, "ratio": rate["lightning"] / rate["plain"],
                      "seconds_per_batch": seconds}
    return {"batch_size": batch_size, "timed_batches": batches - SKIPPED, "repeats": repeats, "kinds": rows}


def report(res: dict) -> str:
    lines = [f"training throughput, batch {res['batch_size']}, {res['timed_batches']} timed batches, "
             f"median of {res['repeats']}, CPU img/s of this process",
             f"{'kind':8}{'plain':>10}{'lightning':>11}{'ratio':>8}  target >= {TARGET}"]
    for kind, row in res["kinds"].items():
        rate = row["images_per_second"]
        verdict = "PASS" if row["ratio"] >= TARGET else "MISS"
        lines.append(f"{kind:8}{rate['plain']:10.0f}{rate['lightning']:11.0f}{row['ratio']:8.2f}  {verdict}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="40 batches, 1 repeat, clean only")
    p.add_argument("--batches", type=int, default=150, help="training batches per measured run (default 150)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--kinds", default="clean,fgsm", help=f"comma-separated, of {', '.join(KINDS)}")
    p.add_argument("--data", default=os.environ.get("ADVLAB_DATA") or str(REPO.parent / "shared/data/cifar10"))
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.kinds = 40, 1, "clean"
    kinds = args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"--kinds: unknown {unknown}; allowed: {', '.join(KINDS)}")
    if args.batches <= SKIPPED + 1:
        p.error(f"--batches must be > {SKIPPED + 1}, got {args.batches}")
    args.kinds = kinds
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    res = measure(args.kinds, args.data, args.batches, args.repeats)
    res["hardware"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads(), "pytorch_lightning": pl.__version__}
    print(report(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
