"""Weights & Biases: offline by default, so no account or network is needed.

Each trained or evaluated model is one W&B run; runs of one Hydra multirun share
a group (the sweep folder), so the dashboard shows a sweep as a grid.
`wandb sync <run_dir>/wandb/offline-run-*` uploads offline runs later.
"""

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from advlab.results import Curves, Results


def make_logger(cfg: DictConfig, run_dir: Path, name: str, group: str | None = None):
    """A Lightning WandbLogger, or None when `logger=none`."""
    if not cfg.logger.get("enabled", False):
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.get("entity"),
        name=name,
        group=cfg.logger.get("group") or group or name,
        tags=list(cfg.logger.get("tags") or []),
        save_dir=str(run_dir),
        offline=cfg.logger.mode == "offline",
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def _rate_table(curves: Curves, value_name: str):
    """A row per curve and eps: its rate, the bounds of its 95% interval, and n."""
    import wandb

    table = wandb.Table(columns=["attack", "eps", value_name, "ci95_low", "ci95_high", "n"])
    for attack, rates in curves.rates.items():
        for e, r in zip(curves.eps, rates):
            low, high = r.ci95
            table.add_data(attack, e, r.value, low, high, r.n)
    return table


def log_results(logger, results: Results, figures: dict[str, Path]) -> None:
    """Accuracy-vs-eps as a wandb.Table with a line plot, the headline numbers as summary, figures as images."""
    if logger is None:
        return
    import wandb

    run = logger.experiment
    rob = results.robustness
    payload = {
        "eval/accuracy_vs_eps": _rate_table(rob, "accuracy"),
        "eval/accuracy_vs_eps_plot": wandb.plot.line_series(
            xs=rob.eps,
            ys=[[r.value for r in rates] for rates in rob.rates.values()],
            keys=list(rob.rates),
            title="accuracy vs eps",
            xname="eps",
        ),
        **{f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()},
    }
    if results.targeted:
        payload["eval/targeted_success"] = _rate_table(results.targeted.success, "success_rate")
    run.log(payload)
    run.summary["eval/clean_acc"] = results.clean.value
    run.summary["eval/n_images"] = results.n_images
    for attack, rates in rob.rates.items():
        for e, r in zip(rob.eps, rates):
            run.summary[f"eval/{attack}_acc@{e:g}"] = r.value


def finish(logger) -> None:
    if logger is not None:
        logger.experiment.finish()
