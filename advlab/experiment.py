"""One experiment: train a classifier (or load one), evaluate it, write results and figures.

    python -m advlab +experiment=fgsm_defense eps=0.01

The run folder (Hydra's output dir) receives model.pt, results.json and the
figures; W&B receives the same tables and figures.
"""

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab import plots, tracking
from advlab.attacks._core import check_eps, check_norm
from advlab.checkpoint import add_metadata, load, save_checkpoint
from advlab.classifier import AdversarialClassifier
from advlab.data import CLASS_NAMES, CIFAR10DataModule, class_index, to_unit_float
from advlab.defenses import check_alpha
from advlab.defenses.lipschitz import certified_accuracy
from advlab.attacks.registry import build_attacks
from advlab.evaluation import adversarial_examples, evaluate_robustness
from advlab.evaluation.checks import run_checks
from advlab.evaluation.distributed import rank_and_world_size
from advlab.io import write_json
from advlab.models import MODELS, build_model
from advlab.provenance import provenance
from advlab.report import write_report


def run_dir_of(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/interactive")


def run_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def is_rank_zero() -> bool:
    """True outside distributed runs; under DDP only for the process that writes files."""
    return rank_and_world_size()[0] == 0


def evaluation_device(cfg: DictConfig) -> torch.device:
    wanted = cfg.evaluation.get("device", "auto")
    if wanted == "auto":
        # current_device(): under DDP, Lightning gives each process its own GPU.
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(wanted)


def build_loss(cfg: DictConfig):
    # Resolved first: instantiate does not descend into interpolated nodes such as ${perturbation};
    # _convert_="all" passes lists as Python lists (a ListConfig would turn dataclass perturbations back into configs).
    return instantiate(OmegaConf.to_container(cfg.loss, resolve=True), _convert_="all")


def build_classifier(cfg: DictConfig) -> AdversarialClassifier:
    """The LightningModule of cfg: model, training loss, optimizer, robust validation check."""
    model = build_model(**cfg.model)
    if cfg.training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    val_attack = instantiate(cfg.validation.attack) if cfg.validation.attack and cfg.eps > 0 else None
    return AdversarialClassifier(
        torch.compile(model) if cfg.training.compile else model,
        loss=build_loss(cfg),
        optimizer=instantiate(cfg.optimizer),
        lr_schedule=cfg.lr_schedule,
        val_attack=val_attack,
        val_attack_batches=cfg.validation.batches,
    )


def training_callbacks(cfg: DictConfig) -> list:
    callbacks = [instantiate(cfg.guard)]
    if cfg.training.ema_decay:
        callbacks.append(pl.callbacks.EMAWeightAveraging(decay=cfg.training.ema_decay))
    return callbacks


def resume_path(resume) -> Path | None:
    """The last.ckpt to resume from: `resume` is a run folder or the checkpoint file itself."""
    if not resume:
        return None
    path = Path(resume)
    path = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {path} (give a run folder with checkpoints/last.ckpt, "
                                "or the .ckpt file)")
    return path


def train_model(cfg: DictConfig, datamodule: CIFAR10DataModule, run_dir: Path, logger=None) -> tuple[nn.Module, dict]:
    """Fit cfg.model with cfg.loss; save run_dir/model.pt."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_classifier(cfg)
    callbacks = training_callbacks(cfg)
    # checkpoints/last.ckpt after every epoch: what `resume=RUN_DIR` continues from.
    # (top-1 without a monitor keeps the newest; save_last alone would write only when training ends)
    last = pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                        enable_version_counter=False)
    trainer = pl.Trainer(
        **cfg.trainer,
        logger=logger if logger is not None else False,
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
        "guard": callbacks[0].summary(),
    }
    if is_rank_zero():
        save_checkpoint(
            run_dir / "model.pt",
            model,
            OmegaConf.to_container(cfg.model, resolve=True),
            metadata={"training": json.dumps(info), "config": json.dumps(OmegaConf.to_container(cfg, resolve=True))},
        )
    return model.eval(), info


def attacks_from_config(cfg: DictConfig) -> dict:
    ev = cfg.evaluation
    return build_attacks(
        list(ev.attacks), norm=ev.norm, seed=cfg.seed,
        pgd_steps=ev.pgd.steps, pgd_step_size=ev.pgd.step_size, pgd_random_start=ev.pgd.random_start,
        pgd_restarts=ev.pgd.restarts, pgd_loss=ev.pgd.loss, apgd_steps=ev.apgd.steps,
        apgd_restarts=ev.apgd.restarts, fab_steps=ev.fab.steps, square_queries=ev.square.queries,
        autoattack_version=ev.autoattack.version, eot_samples=ev.adaptive.eot_samples)


def evaluate_model(cfg: DictConfig, model: nn.Module, datamodule: CIFAR10DataModule, run_dir: Path,
                   title: str = "") -> tuple[dict, dict[str, Path]]:
    """Clean, untargeted and targeted evaluation on the test split, then the checks;
    returns results and figure paths."""
    ev = cfg.evaluation
    attacks = attacks_from_config(cfg)
    target = None if ev.target is None else class_index(ev.target)
    eps = sorted({float(e) for e in ev.eps})
    device = evaluation_device(cfg)
    model = model.to(device)
    datamodule.setup("test")
    pl.seed_everything(cfg.seed, verbose=False)  # random starts, if configured, are reproducible
    # bf16 autocast (evaluation.bf16): about twice the attack throughput on recent GPUs; inputs, steps and
    # projections stay float32, only the model's matmuls and convolutions run in bf16.
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(ev.bf16)):
        results = evaluate_robustness(model, datamodule.test_dataloader(), eps, attacks, target,
                                      per_attack=ev.per_attack, norm=ev.norm, progress=ev.progress)
    if target is not None:
        results["targeted"]["target_name"] = CLASS_NAMES[target]
    if not is_rank_zero():  # under DDP the counts are already gathered; checks and figures are rank 0's
        return results, {}
    if hasattr(model, "lipschitz_constant") and ev.norm == "l2":  # a provable bound: certified accuracy too
        x, y = datamodule.test_set.tensors
        results["certified"] = {"eps": eps, "lipschitz_constant": float(model.lipschitz_constant), "accuracy": [
            certified_accuracy(model, to_unit_float(x.to(device)), y.to(device), e, batch_size=datamodule.eval_batch_size).to_dict()
            for e in eps]}
    if ev.checks.enabled and attacks:
        x, y = datamodule.test_set.tensors
        n = ev.checks.n_images
        results["checks"] = run_checks(
            model, results, to_unit_float(x[:n].to(device)), y[:n].to(device), norm=ev.norm,
            large_eps=ev.checks.large_eps[ev.norm], pgd_steps=ev.pgd.steps, square_queries=ev.checks.square_queries,
            seed=cfg.seed)
    return results, write_figures(model, datamodule, results, attacks, eps, run_dir, ev.num_examples, title)


def write_figures(model, datamodule, results, attacks, eps, run_dir: Path, num_examples: int, title: str):
    x_test, y_test = datamodule.test_set.tensors
    figures = {}
    pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))[:64]
    figures["test_images"] = plots.image_grid(x_test[pick], y_test[pick], CLASS_NAMES, run_dir / "test_images.png")
    figures["confusion_matrix"] = plots.confusion_matrix(
        results["confusion_matrix"]["row_percent"], CLASS_NAMES, run_dir / "confusion_matrix.png",
        title=f"{title} confusion matrix, test (rows sum to 100%)".strip())
    if attacks:
        rob = results["robustness"]
        figures["accuracy_vs_eps"] = plots.rate_curves(
            rob["eps"], rob["accuracy"], run_dir / "accuracy_vs_eps.png",
            ylabel="accuracy (%)", title=f"{title} accuracy under attack".strip())
        x, y = x_test[:num_examples], y_test[:num_examples]
        for name, rows in adversarial_examples(model, x, y, eps, attacks).items():
            figures[f"examples_{name}"] = plots.adversarial_examples(
                rows, y, CLASS_NAMES, run_dir / f"examples_{name}.png",
                title=f"{title} {name.upper()}: prediction and confidence per eps (red = wrong)".strip())
    if "targeted" in results:
        tgt = results["targeted"]
        figures["targeted_success_vs_eps"] = plots.rate_curves(
            tgt["eps"], tgt["success"],
            run_dir / "targeted_success_vs_eps.png", ylabel="success rate (%)",
            title=f"{title} targeted -> {tgt['target_name']}".strip())
    return figures


def train_and_evaluate(cfg: DictConfig, datamodule: CIFAR10DataModule, run_dir: Path, name: str,
                       group: str | None = None) -> dict:
    """The body of every run: model (trained, or loaded from cfg.checkpoint), then evaluation and files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = tracking.make_logger(cfg, run_dir, name, group)
    try:
        if cfg.get("checkpoint"):
            checkpoint = Path(cfg.checkpoint)
            model, training = load(checkpoint), {"checkpoint": str(checkpoint)}
        else:
            model, training = train_model(cfg, datamodule, run_dir, logger)
            checkpoint = run_dir / "model.pt"
        start = time.perf_counter()
        results, figures = evaluate_model(cfg, model, datamodule, run_dir, title=name)
        results["evaluation_seconds"] = round(time.perf_counter() - start, 1)
        if not is_rank_zero():
            return results
        if not cfg.get("checkpoint"):  # the model file carries its own headline numbers (before its hash is taken)
            add_metadata(checkpoint, metrics=json.dumps(headline_metrics(results, cfg.evaluation.norm)))
        results = {
            "name": name,
            "seed": cfg.seed,
            "provenance": provenance(checkpoint),
            "overrides": run_overrides(),
            "training": training,
            **results,
            "figures": {k: Path(p).name for k, p in figures.items()},
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json(run_dir / "results.json", results)
        write_report(run_dir)  # report.html: the results and figures in one self-contained page
        tracking.log_results(logger, results, figures)
    finally:
        tracking.finish(logger)
    return results


def headline_metrics(results: dict, norm: str) -> dict:
    """Clean and worst-case robust accuracy per eps (and certified, where measured), as plain numbers."""
    rob = results["robustness"]
    metrics = {"n_images": results["n_images"], "clean": results["clean"]["value"],
               "worst_case": {f"{e:g}": r["value"] for e, r in zip(rob["eps"], rob["accuracy"]["worst_case"])},
               "attacks": [a for a in rob["accuracy"] if a != "worst_case"], "norm": norm}
    if "certified" in results:
        cert = results["certified"]
        metrics["certified"] = {f"{e:g}": r["value"] for e, r in zip(cert["eps"], cert["accuracy"])}
    return metrics


def check_config(cfg: DictConfig) -> None:
    """Fail before any work on values that would fail later, naming the key."""
    check_eps(cfg.eps, "eps")
    check_alpha(cfg.alpha)
    if cfg.model.name not in MODELS:
        raise ValueError(f"model.name: unknown name {cfg.model.name!r}; registered models are {sorted(MODELS)}")
    check_norm(cfg.evaluation.norm)
    attacks_from_config(cfg)
    if not cfg.get("checkpoint"):  # the training objects check their own arguments
        build_loss(cfg)
        training_callbacks(cfg)
        if cfg.training.ema_decay and (cfg.guard.action == "rollback" or cfg.guard.restore_best):
            # The EMA callback copies its average over the model when training ends, undoing any rollback.
            raise ValueError("guard.action=rollback and guard.restore_best need training.ema_decay=null "
                             "(weight averaging would overwrite the restored weights); use guard.action=stop")
    if cfg.evaluation.target is not None:
        class_index(cfg.evaluation.target)
    for e in cfg.evaluation.eps:
        check_eps(e, "evaluation.eps")


def print_summary(results: dict) -> None:
    from advlab.evaluation.stats import format_rate

    print(f"\n{results['name']}: clean accuracy {format_rate(results['clean'])} on {results['n_images']} test images")
    rob = results["robustness"]
    for attack, rates in rob["accuracy"].items():
        print(f"  {attack:>10}: " + "  ".join(f"eps={e:g} {format_rate(r)}" for e, r in zip(rob["eps"], rates)))
    if "targeted" in results:
        tgt = results["targeted"]
        for attack, rates in tgt["success"].items():
            print(f"  targeted {attack} -> {tgt['target_name']}: "
                  + "  ".join(f"eps={e:g} {format_rate(r)}" for e, r in zip(tgt["eps"], rates)))
    for check in results.get("checks", []):
        print(f"  [{check['status']}] {check['name']}: {check['detail']}")


def run(cfg: DictConfig):
    """Entry point behind `python -m advlab`: dispatch on cfg.task."""
    check_config(cfg)
    run_dir = run_dir_of(cfg)
    datamodule = instantiate(cfg.data)
    if cfg.task == "seed_study":
        from advlab.seed_study import run_seed_study

        return run_seed_study(cfg, datamodule, run_dir)
    if cfg.task != "experiment":
        raise ValueError(f"task must be 'experiment' or 'seed_study', got {cfg.task!r}")
    results = train_and_evaluate(cfg, datamodule, run_dir, name=run_name(cfg), group=sweep_group())
    if not is_rank_zero():
        return results
    print_summary(results)
    print(f"results: {run_dir / 'results.json'}")
    return results


def run_name(cfg: DictConfig) -> str:
    """cfg.name, and in a multirun the job's own overrides ("defense_comparison +defense=pgd"), so the
    W&B runs of a sweep are told apart by name as well as by their config columns."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return cfg.name
    skip = ("+experiment=", "+debug=", "logger", "hydra.", "data.root=")
    return " ".join([cfg.name, *(o for o in run_overrides() if not o.startswith(skip))])


def sweep_group() -> str | None:
    """Runs of one multirun share the sweep folder's name as W&B group."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None
