"""The wall-clock training budget (advlab.budget) and the time-to-robustness curve (advlab.curve).

A fake clock that advances one "second" per training batch makes time deterministic: the budget's
stop, its learning rates and the curve's points are then exact.
"""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import advlab.curve as curve_module
from advlab.budget import TrainingBudget, check_minutes, schedule_factor
from advlab.classifier import AdversarialClassifier
from advlab.curve import RobustnessCurve, check_points
from helpers import TinyNet


class FakeClock(pl.Callback):
    """A clock for TrainingBudget that moves one second at the end of every training batch (listed before the
    budget, so the budget reads the time after the batch)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_train_batch_end(self, *args):
        self.now += 1.0


class Rates(pl.Callback):
    """The learning rate each batch trained with."""

    def __init__(self):
        self.lr = []

    def on_train_batch_start(self, trainer, *args):
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(callbacks, epochs=-1, batches_per_epoch=4):
    torch.manual_seed(0)
    x, y = torch.rand(4 * batches_per_epoch, 3, 8, 8), torch.randint(0, 10, (4 * batches_per_epoch,))
    module = AdversarialClassifier(TinyNet(), optimizer=lambda p: torch.optim.SGD(p, lr=0.4), lr_schedule="constant")
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         limit_val_batches=0)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
    return trainer, module


def test_schedules_are_shares_of_the_configured_rate():
    assert [schedule_factor("onecycle", p, 0.25) for p in (0, 0.125, 0.25, 0.625, 1)] == [0, 0.5, 1, 0.5, 0]
    assert schedule_factor("cosine", 0) == 1 and schedule_factor("cosine", 1) == pytest.approx(0)
    assert schedule_factor("cosine", 0.5) == pytest.approx(0.5)
    assert schedule_factor("constant", 0.7) == 1
    assert schedule_factor("onecycle", 1.3) == 0, "past the budget the rate stays at its end"


def test_training_stops_when_the_budget_is_spent_whatever_the_epochs_and_the_rate_runs_on_the_clock():
    clock, rates = FakeClock(), Rates()
    budget = TrainingBudget(minutes=10 / 60, schedule="onecycle", pct_start=0.2, clock=clock)  # 10 "seconds"
    trainer, _ = _fit([clock, budget, rates], epochs=-1)  # max_epochs=-1: no epoch limit at all
    assert trainer.global_step == 10, "one batch per second: the 10th batch spends the budget"
    expected = [0.4 * schedule_factor("onecycle", k / 10, 0.2) for k in range(10)]
    assert rates.lr == pytest.approx(expected)
    assert budget.summary()["trained_seconds"] == 10


def test_the_epoch_limit_still_applies_before_the_budget():
    clock = FakeClock()
    trainer, _ = _fit([clock, TrainingBudget(minutes=1, clock=clock)], epochs=2)
    assert trainer.global_step == 8


def test_a_resumed_budget_continues_with_what_was_left():
    clock = FakeClock()
    first = TrainingBudget(minutes=10 / 60, clock=clock)
    first.on_train_start(type("T", (), {"optimizers": []})(), None)
    clock.now = 4.0
    state = first.state_dict()
    assert state["spent"] == 4.0
    second = TrainingBudget(minutes=10 / 60, clock=FakeClock())
    second.load_state_dict(state)
    assert second.elapsed == 4.0


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), float("inf")])
def test_a_budget_must_be_positive(minutes):
    with pytest.raises(ValueError, match="training.minutes"):
        check_minutes(minutes)


@pytest.mark.parametrize("points", [[], [0, 0.5], [0.5, 1.5]])
def test_curve_points_are_shares_of_the_budget(points):
    with pytest.raises(ValueError, match="training.curve.points"):
        check_points(points)


def test_the_curve_measures_at_its_shares_with_the_clock_paused(monkeypatch):
    """Points at half the budget and at the end; each measurement 'takes' 100 s, which the budget does not count."""
    clock = FakeClock()
    budget = TrainingBudget(minutes=8 / 60, clock=clock)  # 8 batches
    seen = []

    def fake_measure(model, images, labels, settings):
        seen.append((model.training, budget.elapsed))
        clock.now += 100.0
        return {"clean": {"value": 0.5}, "robust": {"value": 0.25}, "eval_seconds": 100.0}

    monkeypatch.setattr(curve_module, "measure_point", fake_measure)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    curve = RobustnessCurve(budget, x, y, eps=8 / 255, attacks=["fgsm"], points=[1.0, 0.5])
    trainer, _ = _fit([clock, budget, curve], epochs=-1)
    assert trainer.global_step == 8, "the measurements' 200 s were not charged to the 8 s budget"
    assert [row["seconds"] for row in curve.rows] == [4.0, 8.0]
    assert [row["step"] for row in curve.rows] == [4, 8]
    assert [row["progress"] for row in curve.rows] == [0.5, 1.0]
    assert seen == [(True, 4.0), (True, 8.0)], "measure_point gets the model as training left it"
    assert curve.summary()["points"] == curve.rows and curve.summary()["n_images"] == 6


def test_measure_point_is_the_pipelines_numbers_in_float32_and_keeps_the_mode(trained_model, test_images):
    from advlab.curve import curve_settings, measure_point
    from advlab.evaluation.pipeline import run_evaluation

    x, y = test_images[0][:64], test_images[1][:64]
    settings = curve_settings(0.01, ["fgsm"])
    trained_model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a training step's autocast must not reach the measurement
        row = measure_point(trained_model, x, y, settings)
    assert trained_model.training
    expected = run_evaluation(trained_model.eval(), x, y, settings)
    assert row["clean"] == expected.clean.to_dict()
    assert row["robust"] == expected.worst_case(0.01).to_dict()
    assert row["robust"]["value"] < row["clean"]["value"]
