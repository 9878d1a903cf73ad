"""The gradient-masking alarms on a deliberately masked model versus an honest one."""

import pytest
import torch
from torch import nn

from advlab.attacks.registry import build_attacks
from advlab.evaluation.checks import check_label_leaking, check_monotone, run_checks
from advlab.evaluation.robustness import evaluate_robustness
from torch.utils.data import DataLoader, TensorDataset


class Quantised(nn.Module):
    """Rounds the input to 4 grey levels before the model: a non-differentiable step whose
    gradient is zero almost everywhere, so gradient attacks see nothing (masking)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


def _evaluate(model, x, y):
    loader = DataLoader(TensorDataset(x, y), batch_size=200)
    results = evaluate_robustness(model, loader, [0.0, 0.01, 0.03], build_attacks(["fgsm", "pgd"], pgd_steps=10))
    checks = run_checks(model, results, x[:100], y[:100], pgd_steps=10, square_queries=300)
    return results, {c["name"]: c for c in checks}


@pytest.fixture(scope="module")
def honest(trained_model, test_images):
    return _evaluate(trained_model, test_images[0][:200], test_images[1][:200])


@pytest.fixture(scope="module")
def masked(trained_model, test_images):
    return _evaluate(Quantised(trained_model), test_images[0][:200], test_images[1][:200])


def test_honest_model_passes_every_check(honest):
    _, checks = honest
    assert {name: c["status"] for name, c in checks.items()} == {
        "monotone": "PASS", "large_eps": "PASS", "iterative": "PASS", "black_box": "PASS",
        "convergence": "PASS", "label_leaking": "PASS"}


def test_masked_model_is_flagged(masked):
    _, checks = masked
    assert checks["large_eps"]["status"] == "WARN", checks["large_eps"]
    assert checks["black_box"]["status"] == "WARN", checks["black_box"]
    assert checks["large_eps"]["numbers"]["accuracy"] > checks["large_eps"]["numbers"]["chance"]
    assert checks["black_box"]["numbers"]["square"] < checks["black_box"]["numbers"]["pgd"]


def _rate(s, n=100):
    return {"successes": s, "n": n, "value": s / n}


def test_monotone_and_label_leaking_on_constructed_results():
    results = {
        "clean": _rate(50),
        "robustness": {"eps": [0.0, 0.01, 0.1], "accuracy": {"pgd": [_rate(50), _rate(20), _rate(25)],
                                                             "worst_case": [_rate(50), _rate(20), _rate(20)]}},
        "perturbed": {"attack": "fgsm", "eps": [0.0, 0.01, 0.1], "accuracy": [_rate(50), _rate(40), _rate(90)]},
    }
    mono = check_monotone(results)
    assert mono.status == "WARN" and "pgd: 20.0% at eps=0.01 -> 25.0% at eps=0.1" in mono.detail
    leak = check_label_leaking(results)
    assert leak.status == "WARN" and leak.numbers["perturbed"]["0.1"] == 90.0
    results["perturbed"]["accuracy"][2] = _rate(10)
    results["robustness"]["accuracy"]["pgd"][2] = _rate(5)
    assert check_monotone(results).status == "PASS" and check_label_leaking(results).status == "PASS"
