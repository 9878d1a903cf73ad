"""Loggers: the `logger` group (conf/logger/), one entry per Lightning logger, several at once.

W&B is offline by default, so no account or network is needed. Each trained or evaluated
model is one W&B run; runs of one Hydra multirun share a group (the sweep folder), so the
dashboard shows a sweep as a grid. `wandb sync <run_dir>/wandb/offline-run-*` uploads
offline runs later. A run's model.pt and report.html are W&B artifacts of its run; its
objective (optimized_metric, when set) is summary["optimized_metric"], what a W&B sweep
(sweeps/wandb.yaml) optimizes. CSV (<run>/csv/metrics.csv) needs nothing installed;
TensorBoard needs the tensorboard package, which advlab does not install.
"""

import os
from importlib.util import find_spec
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from advlab.errors import UserError
from advlab.results import Curves, Results


def _logger_specs(cfg: DictConfig) -> dict[str, dict]:
    node = cfg.get("logger")
    specs = OmegaConf.to_container(node, resolve=True) if node else {}
    return {key: spec for key, spec in specs.items() if spec}  # logger.NAME=null: that one is off


def _is_wandb(cls) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def check_loggers(cfg: DictConfig) -> None:
    """Refuse, before any work, a logger whose class cannot be imported or whose package is missing."""
    for key, spec in _logger_specs(cfg).items():
        try:
            cls = get_class(spec["_target_"])
        except Exception as error:  # noqa: BLE001 - a misspelt or missing class
            raise UserError(f"logger.{key}: cannot import {spec.get('_target_')!r} ({error})") from error
        if cls.__name__ == "TensorBoardLogger" and not (find_spec("tensorboard") or find_spec("tensorboardX")):
            raise UserError(f"logger.{key}: TensorBoard is not installed (pip install tensorboard); "
                            "logger=csv keeps the curves without it")


def make_logger(cfg: DictConfig, run_dir: Path, name: str, group: str | None = None) -> list:
    """The Lightning loggers of the `logger` group ([] when there are none, `~logger`).

    An entry's `save_dir: null` is the run folder; W&B's name, group and config default to the
    run's name, the sweep (or the run's name) and the run's whole config.
    """
    loggers = []
    for spec in _logger_specs(cfg).values():
        if "save_dir" in spec and spec["save_dir"] is None:
            spec["save_dir"] = str(run_dir)
        if _is_wandb(get_class(spec["_target_"])):
            os.environ.setdefault("WANDB_SILENT", "true")
            spec["name"] = spec.get("name") or name
            spec["group"] = spec.get("group") or group or name
            spec.setdefault("config", OmegaConf.to_container(cfg, resolve=True))
        run_dir.mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(spec, _convert_="all", _recursive_=False))  # W&B's config holds _target_ keys
    return loggers


def _wandb_loggers(logger) -> list:
    """The W&B loggers among `logger`: a list of loggers, one logger, or None."""
    loggers = [] if logger is None else logger if isinstance(logger, (list, tuple)) else [logger]
    return [lg for lg in loggers if _is_wandb(type(lg))]


def _rate_table(curves: Curves, value_name: str):
    """A row per curve and eps: its rate, the bounds of its 95% interval, and n."""
    import wandb

    table = wandb.Table(columns=["attack", "eps", value_name, "ci95_low", "ci95_high", "n"])
    for attack, rates in curves.rates.items():
        for e, r in zip(curves.eps, rates):
            low, high = r.ci95
            table.add_data(attack, e, r.value, low, high, r.n)
    return table


# The summary key of the run's objective (its optimized_metric, when set): what a W&B sweep's `metric.name` names
# (sweeps/wandb.yaml).
OBJECTIVE = "optimized_metric"


def log_results(logger, results: Results, figures: dict[str, Path], objective: float | None = None) -> None:
    """For each W&B logger among `logger`: accuracy-vs-eps as a wandb.Table with a line plot, the headline
    numbers as summary, figures as images, and the run's objective (optimized_metric, when the run has one) as
    summary[OBJECTIVE]. Other loggers (CSV, TensorBoard) keep the training curves only."""
    for wandb_logger in _wandb_loggers(logger):
        _log_results(wandb_logger.experiment, results, figures)
        if objective is not None:
            wandb_logger.experiment.summary[OBJECTIVE] = objective


def _log_results(run, results: Results, figures: dict[str, Path]) -> None:
    import wandb

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
    if results.per_image is not None:
        payload["eval/per_image"] = _per_image_table(results.per_image)
    run.log(payload)
    run.summary["eval/clean_acc"] = results.clean.value
    run.summary["eval/n_images"] = results.n_images
    for attack, rates in rob.rates.items():
        for e, r in zip(rob.eps, rates):
            run.summary[f"eval/{attack}_acc@{e:g}"] = r.value


def _per_image_table(record):
    """The per-image record (advlab.evaluation.record) as a wandb.Table: one row per image, its columns."""
    import math

    import wandb

    table = record.table()
    names = list(table)

    def cell(value):
        if isinstance(value, str):
            return value
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    return wandb.Table(columns=names, data=[[cell(table[k][i]) for k in names] for i in range(len(record))])


# The run folder's files logged as W&B artifacts, and each one's artifact type.
ARTIFACTS = {"model.pt": "model", "report.html": "report"}


def log_artifacts(logger, run_dir: Path, metadata: dict | None = None) -> None:
    """For each W&B logger among `logger`: the run's model.pt (when the run trained one) and report.html as
    W&B artifacts `model-<run id>` (type model) and `report-<run id>` (type report), the run's headline
    numbers (`metadata`) on each. model.pt is written once, so W&B references it in place (no copy);
    report.html can be rewritten (python -m advlab.report), so W&B keeps a copy of this run's."""
    for wandb_logger in _wandb_loggers(logger):
        run = wandb_logger.experiment
        for filename, kind in ARTIFACTS.items():
            path = Path(run_dir) / filename
            if path.is_file():
                _log_artifact(run, path, kind, metadata)


def _log_artifact(run, path: Path, kind: str, metadata: dict | None) -> None:
    import wandb

    artifact = wandb.Artifact(f"{kind}-{run.id}", type=kind, metadata=metadata or {})
    artifact.add_file(str(path), name=path.name, policy="immutable" if kind == "model" else "mutable")
    run.log_artifact(artifact)


def finish(logger) -> None:
    for wandb_logger in _wandb_loggers(logger):
        wandb_logger.experiment.finish()
