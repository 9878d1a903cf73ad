"""The time-to-robustness curve: clean and robust accuracy against training wall time.

airbench judges a recipe by time to accuracy; a robust recipe is judged by time to robust
accuracy. With a training budget (advlab.budget) and `training.curve` set, RobustnessCurve
measures the model at a few shares of the budget (`points`, e.g. 0.25, 0.5, 0.75, 1) on a fixed
slice of the test images (the first `n_images`), with the evaluation pipeline's own attacks
(AutoAttack-strength fast mode by default), at the training eps:

- the training clock is paused while it measures, so the curve costs the run time but not budget;
- with weight averaging on (training.ema_decay) the averaged weights are measured, the ones the run
  keeps; the last point is taken when training has ended, on the weights the run saves;
- the measurement runs in float32 whatever the training precision: a robust accuracy under bf16
  autocast is not the number the final evaluation reports.

The points are the curve's only use: nothing is selected by them, so the test images stay a test.
"""

import time

import pytorch_lightning as pl
import torch
from torch import nn

from advlab.budget import TrainingBudget
from advlab.data import to_unit_float
from advlab.evaluation.pipeline import run_evaluation
from advlab.evaluation.settings import EvaluationSettings


def check_points(points) -> list[float]:
    points = sorted({float(p) for p in points})
    if not points or points[0] <= 0 or points[-1] > 1:
        raise ValueError(f"training.curve.points must be shares of the budget in (0, 1], got {points}")
    return points


class RobustnessCurve(pl.Callback):
    def __init__(self, budget: TrainingBudget, images: torch.Tensor, labels: torch.Tensor, eps: float,
                 attacks: list, points: list[float], norm: str = "linf", seed: int = 0, batch_size: int = 500):
        self.budget, self.points = budget, check_points(points)
        self.images, self.labels = images, labels
        self.settings = curve_settings(eps, attacks, norm, seed, batch_size)
        self.eps = float(eps)
        self.rows: list[dict] = []

    def _due(self) -> bool:
        done = len(self.rows)
        return done < len(self.points) and self.points[done] < 1.0 and self.budget.progress >= self.points[done]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._due():
            self.measure(trainer, _averaged(trainer) or pl_module.model)

    def on_train_end(self, trainer, pl_module):
        # After the weight averaging callback's on_train_end (listed before this one): the weights the run keeps.
        if self.points[-1] == 1.0:
            self.measure(trainer, pl_module.model)

    def measure(self, trainer, model: nn.Module) -> dict:
        """One point, the clock paused: where training is (seconds, epoch, step) and the model's accuracies."""
        with self.budget.paused():
            elapsed = self.budget.elapsed
            row = {"seconds": round(elapsed, 1), "progress": round(min(elapsed / self.budget.seconds, 1.0), 3),
                   "epoch": trainer.current_epoch, "step": trainer.global_step,
                   **measure_point(model, self.images, self.labels, self.settings)}
        self.rows.append(row)
        for logger in trainer.loggers:
            logger.log_metrics({"curve/clean": row["clean"]["value"], "curve/robust": row["robust"]["value"],
                                "curve/seconds": row["seconds"]}, step=trainer.global_step)
        return row

    def summary(self) -> dict:
        """What training.json / results.json record: the points, and how they were measured."""
        return {"eps": self.eps, "n_images": int(len(self.labels)), "attacks": list(self.settings.attacks),
                "points": self.rows}


def curve_settings(eps: float, attacks: list, norm: str = "linf", seed: int = 0,
                   batch_size: int = 500) -> EvaluationSettings:
    """The evaluation of one point: the attacks at one eps, their worst case; no checks (they judge a final model)."""
    return EvaluationSettings(eps=[float(eps)], attacks=list(attacks), norm=norm, seed=seed, batch_size=batch_size,
                              checks=False, perturbed=False, per_attack=False, progress=False, resume=False)


def measure_point(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: EvaluationSettings) -> dict:
    """Clean and worst-case robust accuracy (Rate dicts) of model on the slice, in float32; its mode is put back."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.autocast(device.type, enabled=False):
            results = run_evaluation(model.eval(), images.to(device), labels.to(device), settings)
    finally:
        model.train(was_training)
    return {"clean": results.clean.to_dict(), "robust": results.worst_case(settings.eps[0]).to_dict(),
            "eval_seconds": round(time.perf_counter() - start, 1)}


def _averaged(trainer) -> nn.Module | None:
    """The weight-averaged copy of the model that Lightning's WeightAveraging keeps, if any."""
    for callback in trainer.callbacks:
        average = getattr(callback, "_average_model", None)
        if isinstance(callback, pl.callbacks.WeightAveraging) and average is not None:
            return average.module.model
    return None


def curve_images(datamodule, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n_images test images as [0, 1] floats, and their labels (the curve's fixed slice)."""
    datamodule.setup("test")
    x, y = datamodule.test_set.tensors
    return to_unit_float(x[:n_images].clone()), y[:n_images].clone()

