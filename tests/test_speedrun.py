"""The robust speedrun (+experiment=speedrun): its config, its network, and a run at smoke size that ends with
the time-to-robustness curve in results.json and in the report."""

import json

import pytest
import torch

from advlab.cli import run
from advlab.models import build_model
from advlab.models.speedrun_cnn import SpeedrunCNN
from advlab.training import fast_bf16, trainer_precision
from helpers import SMOKE, config


def test_the_speedrun_config_is_the_recipe_it_documents():
    cfg = config("+experiment=speedrun")
    assert cfg.training.minutes == cfg.speedrun.minutes == 10
    assert cfg.trainer.max_epochs == -1, "the budget, not an epoch count, ends training"
    assert cfg.eps == pytest.approx(8 / 255) and cfg.evaluation.eps[-1] == pytest.approx(8 / 255)
    assert list(cfg.evaluation.attacks) == ["fgsm", "pgd", "autoattack-fast"], "judged by the default evaluation"
    assert cfg.model.name == "speedrun_cnn" and cfg.data.augment
    assert list(cfg.training.curve.points) == [0.25, 0.5, 0.75, 1.0]
    assert config("+experiment=speedrun", "speedrun.minutes=3").training.minutes == 3


def test_the_speedrun_network_takes_any_size_and_returns_logits():
    torch.manual_seed(0)
    net = SpeedrunCNN(num_classes=7, widths=(8, 16, 32)).eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert net(torch.rand(2, 3, 64, 48)).shape == (2, 7), "global pooling: any image size"
    built = build_model("speedrun_cnn", widths=[8, 16, 32], normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert type(built) is SpeedrunCNN and torch.allclose(built.normalize.std.flatten(), torch.full((3,), 0.25))
    with pytest.raises(ValueError, match="widths must be three"):
        SpeedrunCNN(widths=(8, 16))
    with pytest.raises(ValueError, match="activation must be one of"):
        SpeedrunCNN(activation="tanh")


def test_precision_auto_is_bf16_only_where_it_is_native(monkeypatch):
    assert trainer_precision("32-true") == "32-true" and trainer_precision("bf16-mixed") == "bf16-mixed"
    monkeypatch.setattr("advlab.training.fast_bf16", lambda device: True)
    assert trainer_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr("advlab.training.fast_bf16", lambda device: False)
    assert trainer_precision("auto", "cpu") == "32-true"
    assert isinstance(fast_bf16("cpu"), bool)


def test_a_speedrun_at_smoke_size_records_and_draws_its_curve(cifar_root, tmp_path):
    """A budget of 2 seconds at smoke size: training stops (budget or the smoke's 4 batches), the curve has a
    point at the end, results.json and the report carry it, and the run's precision is what auto chose."""
    cfg = config("+experiment=speedrun", *SMOKE, "speedrun.minutes=0.03", "logger=csv", f"data.root={cifar_root}",
                 "model.widths=[8,16,32]", "training.curve.n_images=16", "training.curve.attacks=[fgsm]",
                 "evaluation.attacks=[fgsm,pgd]", "evaluation.checks.enabled=false", f"+output_dir={tmp_path}")
    run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    budget, curve = results["training"]["budget"], results["training"]["curve"]
    assert budget["minutes"] == pytest.approx(0.03) and budget["schedule"] == "onecycle"
    assert curve["eps"] == pytest.approx(8 / 255) and curve["n_images"] == 16 and curve["attacks"] == ["fgsm"]
    last = curve["points"][-1]
    assert last["step"] >= 1 and last["clean"]["n"] == 16 and last["robust"]["value"] <= last["clean"]["value"]
    assert results["figures"]["time_to_robustness"] == "time_to_robustness.png"
    assert (tmp_path / "time_to_robustness.png").stat().st_size > 0
    assert "Time to robustness" in (tmp_path / "report.html").read_text()
    assert results["config"]["trainer"]["precision"] == "auto"


def test_the_gpu_speedrun_composes_and_runs_at_tiny_scale_on_a_cpu(cifar_root, tmp_path):
    cfg = config("+experiment=speedrun_gpu", *SMOKE, "speedrun.minutes=0.02", "model.width=4", "logger=none",
                 f"data.root={cifar_root}", "training.curve.n_images=16", "training.curve.attacks=[fgsm]",
                 "evaluation.attacks=[fgsm]", "evaluation.checks.enabled=false", f"+output_dir={tmp_path}")
    assert cfg.model.name == "preact_resnet18" and cfg.training.minutes == 0.02 and cfg.training.ema_decay == 0.999
    run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["training"]["curve"]["points"] and results["config"]["speedrun"]["minutes"] == 0.02

