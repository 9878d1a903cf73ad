"""Training to a wall-clock budget: stop when it is spent, and run the learning rate on the clock.

    python -m advlab +experiment=speedrun speedrun.minutes=10     # training.minutes: 10

A budget in epochs says nothing about what a run costs on the machine at hand; a budget in minutes
does, and it is what a speedrun is judged by. With `training.minutes` set, TrainingBudget

- keeps the training clock: wall time since training started, less the time the run spent measuring
  itself (the time-to-robustness curve, advlab.curve, pauses the clock while it evaluates);
  the per-epoch validation and the guard's PGD count, being part of the recipe;
- sets every parameter group's learning rate from the share of the budget spent, `progress` in
  [0, 1]: "onecycle" rises linearly from 0 to the configured rate at `pct_start` and falls linearly
  to 0 at the end (the triangular cycle of Wong et al. 2020 and airbench, on time instead of steps),
  "cosine" falls from the rate to 0, "constant" keeps it. The step-based schedules (the classifier's
  `lr_schedule` without a budget) need the step count in advance, which a time budget does not know;
- stops training after the batch during which the budget ran out (Lightning then validates once
  more and ends), whatever trainer.max_epochs says.

Under DDP rank 0's clock decides for every rank (one broadcast per step), so all ranks step with the
same rate and stop on the same batch. The clock is saved with Lightning's checkpoints: a resumed run
continues with what was left of its budget.
"""

import math
import time
from contextlib import contextmanager

import pytorch_lightning as pl

SCHEDULES = ("onecycle", "cosine", "constant")


def check_minutes(minutes) -> float:
    minutes = float(minutes)
    if not math.isfinite(minutes) or minutes <= 0:
        raise ValueError(f"training.minutes (the wall-clock training budget) must be a number > 0, got {minutes}")
    return minutes


def schedule_factor(schedule: str, progress: float, pct_start: float = 0.25) -> float:
    """The learning rate's multiple of its configured value after `progress` (0-1) of the budget."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        return p / pct_start if p < pct_start else (1.0 - p) / (1.0 - pct_start)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


class TrainingBudget(pl.Callback):
    def __init__(self, minutes: float, schedule: str = "onecycle", pct_start: float = 0.25,
                 clock=time.perf_counter):
        """clock: seconds from an arbitrary origin (tests pass one of their own)."""
        if schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0 < float(pct_start) < 1:
            raise ValueError(f"training.pct_start (share of the budget spent warming up) must be in (0, 1), "
                             f"got {pct_start}")
        self.seconds = 60.0 * check_minutes(minutes)
        self.schedule, self.pct_start, self.clock = schedule, float(pct_start), clock
        self.spent = 0.0  # seconds of earlier sessions of the same run (resume)
        self._started = None  # perf_counter when this session's clock started
        self._paused = 0.0  # seconds this session spent paused
        self._base_lr: list[float] = []
        self.progress = 0.0  # what the last batch saw (rank 0's), for the curve and the logs

    # -- the clock --------------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Training seconds so far: this session's wall time less its pauses, plus earlier sessions'."""
        if self._started is None:
            return self.spent
        return self.spent + self.clock() - self._started - self._paused

    @contextmanager
    def paused(self):
        """Time spent inside does not count against the budget (measuring the model, not training it)."""
        start = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - start

    def _shared_progress(self, trainer) -> float:
        # rank 0's clock decides, so every rank uses the same rate and stops on the same batch
        return float(trainer.strategy.broadcast(self.elapsed / self.seconds, src=0))

    # -- Lightning hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        self._started, self._paused = self.clock(), 0.0
        if not self._base_lr:  # a resumed run keeps the rates it started with (its optimizer holds scaled ones)
            self._base_lr = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.progress = self._shared_progress(trainer)
        factor = schedule_factor(self.schedule, self.progress, self.pct_start)
        groups = [group for opt in trainer.optimizers for group in opt.param_groups]
        for group, base in zip(groups, self._base_lr):
            group["lr"] = base * factor

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._shared_progress(trainer) >= 1.0:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self.spent, self._started = self.elapsed, None

    def state_dict(self) -> dict:
        return {"spent": self.elapsed, "seconds": self.seconds, "base_lr": list(self._base_lr)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.spent, self._base_lr = float(state_dict["spent"]), list(state_dict["base_lr"])

    def summary(self) -> dict:
        """What training.json / results.json record about the budget."""
        return {"minutes": self.seconds / 60, "trained_seconds": round(self.elapsed, 1),
                "schedule": self.schedule, "pct_start": self.pct_start}
