"""Training a run's model: build the LightningModule from the config, fit it, save model.pt."""

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.budget import TrainingBudget
from advlab.build import build_classifier, plain, training_callbacks
from advlab.callbacks import RobustGuard
from advlab.curve import RobustnessCurve, curve_images
from advlab.checkpoint import save_checkpoint
from advlab.errors import UserFileError
from advlab.evaluation.distributed import rank_and_world_size


def resume_path(resume) -> Path | None:
    """The last.ckpt to resume from: `resume` is a run folder or the checkpoint file itself."""
    if not resume:
        return None
    path = Path(resume)
    path = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not path.is_file():
        raise UserFileError(f"resume: no checkpoint at {path} (give a run folder with checkpoints/last.ckpt, "
                            "or the .ckpt file)")
    return path


def fast_bf16(device: str) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU that supports it, a CPU with AMX or AVX512-BF16
    (where oneDNN's bf16 convolutions ran 2.5-3.6x faster than float32 ones; docs/speedrun.md). Elsewhere bf16 is
    emulated and slower than float32."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence looked up with a default
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def trainer_precision(precision, accelerator: str = "auto"):
    """trainer.precision as Lightning takes it; "auto": "bf16-mixed" where the training device computes in bf16
    natively (fast_bf16), else "32-true". Attacks inside training_step run under the same autocast; the
    evaluation of the trained model is always float32 (evaluation.bf16)."""
    if precision != "auto":
        return precision
    device = "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"
    return "bf16-mixed" if fast_bf16(device) else "32-true"


def train_model(cfg: DictConfig, datamodule, run_dir: Path, logger=None) -> tuple[nn.Module, dict]:
    """Fit cfg.model with cfg.loss; returns the model (eval mode) and what training recorded.

    logger: a Lightning logger, a list of them (advlab.tracking.make_logger) or None; the callbacks
    are the `callbacks` group's (advlab.build.training_callbacks).

    The model file (model.pt) is written by the caller once the evaluation's headline numbers
    are known, so it is written once, complete.
    """
    # Training is the one place advlab seeds the global stream: shuffling, initialisation, dropout.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_classifier(cfg)
    callbacks = training_callbacks(cfg, run_dir)
    loggers = [] if logger is None else list(logger) if isinstance(logger, (list, tuple)) else [logger]
    if not loggers:  # nothing to write the learning rate to (Lightning would refuse the monitor)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    guard = next((c for c in callbacks if isinstance(c, RobustGuard)), None)
    budget = next((c for c in callbacks if isinstance(c, TrainingBudget)), None)
    curve = time_to_robustness(cfg, datamodule, budget)
    if curve is not None:  # last: its final point is taken after weight averaging has put its average in place
        callbacks.append(curve)
    # checkpoints/last.ckpt after every epoch: what `resume=RUN_DIR` continues from.
    # (top-1 without a monitor keeps the newest; save_last alone would write only when training ends)
    last = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                        enable_version_counter=False)
    trainer = pl.Trainer(
        **{**cfg.trainer, "precision": trainer_precision(cfg.trainer.precision, cfg.trainer.accelerator)},
        logger=loggers or False,
        callbacks=[*callbacks, last],
        inference_mode=False,  # validation runs attacks, which need gradients
        default_root_dir=str(run_dir),
    )
    start = time.perf_counter()
    # weights_only: the checkpoint holds tensors and plain values, and loading it runs no code from the file.
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg.resume), weights_only=True)
    model = getattr(module.model, "_orig_mod", module.model)  # torch.compile's wrapper holds the same weights
    info = {
        "seconds": round(time.perf_counter() - start, 1),
        "epochs": trainer.current_epoch,
        "loss": repr(module.loss),
        "alpha": cfg.alpha,
        "eps": cfg.eps,
        "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "guard": guard.summary() if guard is not None else None,
    }
    if budget is not None:
        info["budget"] = budget.summary()
    if curve is not None:
        info["curve"] = curve.summary()
    return model.eval(), info


def time_to_robustness(cfg: DictConfig, datamodule, budget: TrainingBudget | None) -> RobustnessCurve | None:
    """The time-to-robustness curve of training.curve (advlab.curve), on a budgeted run; None when off."""
    spec = cfg.training.curve
    if budget is None or not spec.points:
        return None
    images, labels = curve_images(datamodule, spec.n_images)
    return RobustnessCurve(budget, images, labels, eps=cfg.eps, attacks=plain(spec.attacks), points=plain(spec.points),
                           norm=cfg.norm, seed=cfg.seed, batch_size=cfg.data.eval_batch_size)


def save_model(path: Path, model: nn.Module, cfg: DictConfig, training: dict, metrics: dict) -> None:
    """model.pt: weights, the registry name and arguments, the run's config, training and headline metrics."""
    if rank_and_world_size()[0] != 0:
        return
    save_checkpoint(path, model, plain(cfg.model), metadata={
        "training": json.dumps(training), "config": json.dumps(OmegaConf.to_container(cfg, resolve=True)),
        "metrics": json.dumps(metrics)})
