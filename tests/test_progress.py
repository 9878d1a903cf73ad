"""The evaluation's progress bar: one unit per attack run at one eps on one batch, on stderr,
silent when asked, under ADVLAB_QUIET, off a terminal (in auto mode) and on ranks other than 0."""

import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation import robustness
from advlab.evaluation.progress import progress_enabled
from advlab.evaluation.robustness import evaluate_robustness


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10)).eval()
    x = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return model, DataLoader(TensorDataset(x, torch.arange(10) % 10), batch_size=4)  # 3 batches


@pytest.fixture
def bars(monkeypatch):
    """(total asked for, bar) for every bar the evaluation creates (tqdm fills in a missing total at close)."""
    made = []
    real = robustness.progress_bar
    monkeypatch.setattr(robustness, "progress_bar", lambda total, *a, **k: made.append((total, real(total, *a, **k)))
                        or made[-1][1])
    return made


def test_the_bar_counts_every_attack_run_and_reaches_its_total(setup, bars, capsys, monkeypatch):
    monkeypatch.delenv("ADVLAB_QUIET", raising=False)
    model, loader = setup
    attacks = build_attacks(["fgsm", {"name": "pgd", "steps": 2}, {"name": "apgd-dlr", "steps": 2}])
    evaluate_robustness(model, loader, [0.0, 0.01], attacks, target=3, progress=True)
    # 3 batches x 2 eps x (3 attacks + the 2 that take a target) = 30 units
    total, bar = bars[0]
    assert total == 30 and bar.n == 30
    err = capsys.readouterr().err
    assert "evaluation" in err and "30/30" in err


@pytest.mark.parametrize("progress, quiet, tty, rank, shown", [
    (None, "", True, 0, True),      # auto, at a terminal
    (None, "", False, 0, False),    # auto, output redirected (logs, CI)
    (True, "", False, 0, True),     # asked for, even without a terminal
    (False, "", True, 0, False),    # refused
    (True, "1", True, 0, False),    # ADVLAB_QUIET wins over everything
    (None, "true", True, 0, False),
    (None, "0", True, 0, True),
    (True, "", True, 1, False),     # one bar per job: rank 0's
])
def test_when_the_bar_is_shown(monkeypatch, progress, quiet, tty, rank, shown):
    monkeypatch.setenv("ADVLAB_QUIET", quiet)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert progress_enabled(progress, rank) is shown


@pytest.mark.parametrize("progress, quiet", [(False, ""), (None, ""), (True, "1")])
def test_a_quiet_evaluation_prints_nothing(setup, capsys, monkeypatch, progress, quiet):
    monkeypatch.setenv("ADVLAB_QUIET", quiet)  # under pytest, stderr is no terminal: auto is quiet
    model, loader = setup
    evaluate_robustness(model, loader, [0.0, 0.01], build_attacks(["fgsm"]), progress=progress)
    assert capsys.readouterr().err == ""


def test_a_loader_without_length_gets_a_bar_without_total(setup, bars, monkeypatch):
    monkeypatch.delenv("ADVLAB_QUIET", raising=False)
    model, loader = setup
    generator = (batch for batch in loader)
    results = evaluate_robustness(model, generator, [0.0, 0.01], build_attacks(["fgsm"]), progress=True)
    total, bar = bars[0]
    assert total is None and bar.n == 3 * 2 and results.n_images == 10
