"""One experiment: train a classifier (or load one), evaluate it, write results and figures.

    python -m advlab +experiment=fgsm_defense eps=0.01

The run folder (Hydra's output dir) receives model.pt, results.json, the figures and
report.html; W&B receives the same tables and figures, and model.pt and report.html as
artifacts. Everything is rendered from one Results object, in memory.
"""

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab import tracking
from advlab.attacks.registry import build_attacks
from advlab.build import evaluation_settings, plain
from advlab.checkpoint import load
from advlab.data import DatasetInfo, check_model_on_data, digits, resolve_dataset
from advlab.evaluation.distributed import rank_and_world_size
from advlab.evaluation.adversarial import FOLDER as ADVERSARIAL
from advlab.evaluation.adversarial import write_adversarial
from advlab.evaluation.pipeline import run_evaluation
from advlab.figures import write_figures
from advlab.io import write_json
from advlab.objective import metric_value
from advlab.provenance import provenance
from advlab.report import write_run_report
from advlab.results import Results
from advlab.training import save_model, train_model


def is_rank_zero() -> bool:
    """True outside distributed runs; under DDP only for the process that writes files."""
    return rank_and_world_size()[0] == 0


def evaluation_device(cfg: DictConfig) -> torch.device:
    wanted = cfg.evaluation.get("device", "auto")
    if wanted == "auto":
        # current_device(): under DDP, Lightning gives each process its own GPU.
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(wanted)


def class_names(info: DatasetInfo, num_classes: int) -> list[str]:
    """The dataset's class names, or "0", "1", ... when they do not name the model's num_classes classes."""
    names = info.class_names if info is not None and len(info.class_names) == num_classes else digits(num_classes)
    return list(names)


def evaluate_model(cfg: DictConfig, model: nn.Module, datamodule, info: DatasetInfo, run_dir: Path | None = None
                   ) -> Results:
    """The evaluation pipeline (advlab.evaluation.pipeline) on the test split, with the config's settings; the
    per-image record names run_dir as the source of its columns.

    The number of classes is the model's, checked against the data's (info, the labels)."""
    settings = evaluation_settings(cfg)
    if run_dir is not None:
        settings.source = str(run_dir)
    datamodule.setup("test")
    images, labels = datamodule.test_set.tensors
    model = model.to(evaluation_device(cfg)).eval()
    num_classes = check_model_on_data(model, images, labels, info.num_classes)
    results = run_evaluation(model, images, labels, settings, num_classes=num_classes)
    if results.targeted:
        results.targeted.target_name = class_names(info, num_classes)[results.targeted.target]
    return results


def train_and_evaluate(cfg: DictConfig, datamodule, run_dir: Path, name: str, group: str | None = None,
                       overrides: list[str] | None = None) -> Results:
    """The body of every run: model (trained, or loaded from cfg.checkpoint), evaluation, files."""
    # The dataset's facts, once: the config's, then the checkpoint's and the files' (data=npz), also written into
    # cfg.data for the model config's interpolations and the saved config.
    datamodule.setup("test")
    info = resolve_dataset(cfg, datamodule)
    if cfg.get("checkpoint"):  # read before anything is written: a missing or corrupt file leaves no run behind
        checkpoint = Path(cfg.checkpoint)
        model, training = load(checkpoint, model=plain(cfg.model)), {"checkpoint": str(checkpoint)}
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = tracking.make_logger(cfg, run_dir, name, group)
    try:
        if not cfg.get("checkpoint"):
            model, training = train_model(cfg, datamodule, run_dir, logger)
            checkpoint = run_dir / "model.pt"
        start = time.perf_counter()
        results = evaluate_model(cfg, model, datamodule, info, run_dir)
        if not is_rank_zero():  # under DDP the counts are already gathered; files are rank 0's
            return results
        results.name, results.seed, results.overrides = name, cfg.seed, list(overrides or [])
        results.training, results.config = training, OmegaConf.to_container(cfg, resolve=True)
        images, labels = datamodule.test_set.tensors
        attacks = build_attacks(evaluation_settings(cfg).attacks, norm=cfg.evaluation.norm, seed=cfg.seed)
        results.figures = write_figures(model, images, labels, results, attacks, run_dir,
                                        class_names(info, len(results.confusion)),
                                        cfg.evaluation.num_examples, title=name)
        results.evaluation_seconds = round(time.perf_counter() - start, 1)
        if not cfg.get("checkpoint"):  # written once, complete, with its headline numbers (before it is hashed)
            save_model(checkpoint, model, cfg, training, results.headline())
        results.provenance = {**provenance(checkpoint), **results.provenance}  # (merged_from, with a merge)
        if results.adversarial:
            write_adversarial(run_dir / ADVERSARIAL, results.adversarial, labels, results.per_image.columns["index"])
        results.save(run_dir / "results.json")  # and per_image.csv.gz beside it
        write_run_report(run_dir, results)
        objective = metric_value(cfg.optimized_metric, results) if cfg.get("optimized_metric") is not None else None
        tracking.log_results(logger, results, {k: run_dir / f for k, f in results.figures.items()}, objective)
        tracking.log_artifacts(logger, run_dir, results.headline())  # model.pt and report.html
    finally:
        tracking.finish(logger)
    return results


def run_binarization(cfg: DictConfig, datamodule, run_dir: Path) -> dict:
    """+experiment=binarization: the binarization test (advlab.evaluation.binarization) of the checkpoint's
    model with the evaluation's attacks at binarization.eps; binarization.json in the run folder."""
    from advlab.evaluation.binarization import binarization_test

    datamodule.setup("test")
    resolve_dataset(cfg, datamodule)
    model = load(Path(cfg.checkpoint), model=plain(cfg.model)).to(evaluation_device(cfg)).eval()
    images, labels = datamodule.test_set.tensors
    spec = cfg.binarization
    attacks = build_attacks(evaluation_settings(cfg).attacks, norm=cfg.evaluation.norm, seed=cfg.seed)
    result = binarization_test(model, images, labels, attacks, spec.eps, cfg.evaluation.norm, spec.n_images,
                               spec.n_inner, spec.inner_radius, spec.threshold, cfg.seed)
    out = {**result.to_dict(), "attacks": list(attacks), "checkpoint": str(cfg.checkpoint),
           "provenance": provenance(Path(cfg.checkpoint))}
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "binarization.json", out)
        print(result.summary())
        print(f"results: {run_dir / 'binarization.json'}")
    return out

