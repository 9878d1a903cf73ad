"""Building a run's objects from its config, and refusing a bad config before any work.

Every attack goes through one route (advlab.attacks.registry.build_attack): the training
perturbation (conf/perturbation/), the robust validation attack (validation.attack) and the
evaluation attacks (evaluation.attacks) are entries of the same form.
"""

from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from advlab.attacks._core import check_eps, check_norm
from advlab.attacks.perturbation import Perturbation
from advlab.attacks.registry import build_attacks
from advlab.budget import TrainingBudget
from advlab.callbacks import RobustGuard
from advlab.classifier import AdversarialClassifier, config_loss, config_val_attack
from advlab.data import class_index, resolve_dataset
from advlab.defenses import check_alpha
from advlab.evaluation.settings import EvaluationSettings
from advlab.models import MODELS
from advlab.models.adapter import parse_normalization
from advlab.models.registry import check_target, targets
from advlab.objective import check_metric
from advlab.tracking import check_loggers


def plain(node):
    """A config node as plain Python values, interpolations resolved (None stays None)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_loss(cfg: DictConfig):
    # Resolved first: instantiate does not descend into interpolated nodes such as ${perturbation}.
    return config_loss({"loss": plain(cfg.loss)})


def build_validation_attack(cfg: DictConfig) -> Perturbation | None:
    """The robust validation attack (val/adv_acc) at the training eps and norm; None when off."""
    return config_val_attack(classifier_config(cfg))


def robust_validation(cfg: DictConfig) -> bool:
    return bool(cfg.validation.attack) and cfg.eps > 0


def classifier_config(cfg: DictConfig) -> dict:
    """What AdversarialClassifier(config=...) builds its objects from: plain values, resolved, so they are
    the checkpoint's hyperparameters and AdversarialClassifier.load_from_checkpoint rebuilds the module."""
    return {
        "model": plain(cfg.model), "loss": plain(cfg.loss), "optimizer": plain(cfg.optimizer),
        "val_attack": {"attack": plain(cfg.validation.attack), "eps": float(cfg.eps), "norm": cfg.norm}
        if robust_validation(cfg) else None,
        "channels_last": bool(cfg.training.channels_last), "compile": bool(cfg.training.compile),
    }


def build_classifier(cfg: DictConfig) -> AdversarialClassifier:
    """The LightningModule of cfg: model, training loss, optimizer, robust validation check."""
    num_classes = OmegaConf.select(cfg, "data.num_classes", default=None) or cfg.model.get("num_classes")
    # With a time budget the schedule runs on the clock (advlab.budget.TrainingBudget sets the rate), not on steps.
    lr_schedule = "constant" if cfg.training.minutes else cfg.lr_schedule
    return AdversarialClassifier(config=classifier_config(cfg), lr_schedule=lr_schedule,
                                 val_attack_batches=cfg.validation.batches, seed=cfg.seed, num_classes=num_classes)


def training_callbacks(cfg: DictConfig, run_dir: Path | None = None) -> list:
    """The `callbacks` group's entries (conf/callbacks/, any {_target_: ...} from the command line; a null
    entry is off), then the weight averaging of training.ema_decay. `monitor: auto` becomes val/adv_acc
    when robust validation is on, else val/acc; a ModelCheckpoint with `dirpath: null` writes into
    run_dir/checkpoints."""
    callbacks = []
    no_bar = not OmegaConf.select(cfg, "trainer.enable_progress_bar", default=True)
    for key, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        spec = plain(node)
        if spec.get("monitor") == "auto":
            spec["monitor"] = "val/adv_acc" if robust_validation(cfg) else "val/acc"
        try:
            if run_dir is not None and "dirpath" in spec and spec["dirpath"] is None \
                    and issubclass(get_class(spec["_target_"]), pl.callbacks.ModelCheckpoint):
                spec["dirpath"] = str(Path(run_dir) / "checkpoints")
            callback = instantiate(spec)
        except (InstantiationException, ImportError, ValueError) as error:  # the constructor's own message, named by key
            raise ValueError(f"callbacks.{key}: {error.__cause__ or error}") from error
        if no_bar and isinstance(callback, pl.callbacks.ProgressBar):
            continue  # Lightning refuses a progress bar callback with the bar switched off
        callbacks.append(callback)
    if cfg.training.minutes:
        callbacks.append(TrainingBudget(cfg.training.minutes, cfg.lr_schedule, cfg.training.pct_start))
    if cfg.training.ema_decay:
        callbacks.append(pl.callbacks.EMAWeightAveraging(decay=cfg.training.ema_decay))
    return callbacks


def target_index(cfg: DictConfig, target) -> int:
    """evaluation.target (a class name or index) as an index, by the run's dataset facts as far as the config
    and the checkpoint tell them (advlab.data.resolve_dataset; before any data is read)."""
    info = resolve_dataset(cfg)
    return class_index(target, None if info is None else info.class_names, None if info is None else info.num_classes)


def evaluation_settings(cfg: DictConfig) -> EvaluationSettings:
    ev = cfg.evaluation
    return EvaluationSettings(
        eps=[float(e) for e in ev.eps], attacks=plain(ev.attacks) or [], norm=ev.norm,
        target=None if ev.target is None else target_index(cfg, ev.target), per_attack=ev.per_attack, bf16=ev.bf16,
        checks=ev.checks.enabled, checks_n_images=ev.checks.n_images, checks_square_queries=ev.checks.square_queries,
        checks_large_eps=plain(ev.checks.large_eps), convergence=ev.checks.convergence, seed=cfg.seed,
        batch_size=cfg.data.eval_batch_size, progress=ev.progress, save_adversarial=ev.save_adversarial,
        transfer_from=ev.transfer_from, merge=ev.merge, resume=ev.resume)


def check_model_config(spec: dict) -> None:
    """model: a registered name or an importable _target_, and a well-formed normalization (nothing is built;
    statistics still unknown, {mean: null, std: null} before data=npz's files are read, are checked when it is)."""
    normalization = spec.get("normalization")
    if not (isinstance(normalization, Mapping) and normalization.get("mean") is None and normalization.get("std") is None):
        parse_normalization(normalization)
    if "_target_" not in spec and spec.get("name") not in MODELS:
        raise ValueError(f"model.name: unknown name {spec.get('name')!r}; registered models are {sorted(MODELS)} "
                         "(or give model._target_: any importable nn.Module)")
    for target in targets(spec):
        check_target(target)


def check_config(cfg: DictConfig) -> None:
    """Fail before any work on values that would fail later, naming the key."""
    check_eps(cfg.eps, "eps")
    check_alpha(cfg.alpha)
    check_norm(cfg.norm)
    check_model_config(plain(cfg.model))
    check_norm(cfg.evaluation.norm)
    for e in cfg.evaluation.eps:
        check_eps(e, "evaluation.eps")
    settings = evaluation_settings(cfg)
    attacks = build_attacks(settings.attacks, norm=settings.norm)
    check_metric(cfg, attacks)  # optimized_metric: what a sweeper optimizes, from what the run evaluates
    check_loggers(cfg)
    if cfg.get("require_checkpoint") and not cfg.get("checkpoint"):
        # (a `checkpoint: ???` in the experiment would not do: OmegaConf keeps config.yaml's null over it)
        raise ValueError("checkpoint: this experiment evaluates a saved model; give checkpoint=PATH (advlab's "
                         "model.pt, a state_dict .pt/.pth, .safetensors, a Lightning .ckpt) or checkpoint=pretrained")
    if cfg.get("checkpoint"):
        return
    # The training objects check their own arguments (an attack its norm: n-fgsm refuses l2).
    try:
        build_loss(cfg)
    except InstantiationException as error:  # Hydra wraps the constructor's own message: pass that on
        raise ValueError(f"loss/perturbation: {error.__cause__ or error}") from error
    build_validation_attack(cfg)
    guards = [c for c in training_callbacks(cfg) if isinstance(c, RobustGuard)]
    if cfg.training.ema_decay and any(g.action == "rollback" or g.restore_best for g in guards):
        # The EMA callback copies its average over the model when training ends, undoing any rollback.
        raise ValueError("guard.action=rollback and guard.restore_best need training.ema_decay=null "
                         "(weight averaging would overwrite the restored weights); use guard.action=stop")
