"""The gradient-masking alarms on a deliberately masked model versus an honest one, and each check's
verdict on constructed results."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation.checks import LARGE_EPS, check_iterative, check_label_leaking, check_monotone, run_checks
from advlab.evaluation.robustness import evaluate_robustness
from advlab.results import CHECK_NAMES, Curves, Results
from advlab.stats import Rate
from helpers import PixelNet, predict


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
    attacks = build_attacks(["fgsm", {"name": "pgd", "steps": 10}])
    results = evaluate_robustness(model, loader, [0.0, 0.01, 0.03], attacks, progress=False)
    checks = run_checks(model, results, x[:100], y[:100], iterative=["pgd"], pgd_steps=10, square_queries=300)
    assert [c.name for c in checks] == list(CHECK_NAMES), "every check, in order"
    return results, {c.name: c for c in checks}


@pytest.fixture(scope="module")
def honest(trained_model, test_images):
    return _evaluate(trained_model, test_images[0][:200], test_images[1][:200])


@pytest.fixture(scope="module")
def masked(trained_model, test_images):
    return _evaluate(Quantised(trained_model), test_images[0][:200], test_images[1][:200])


def test_honest_model_passes_every_check(honest):
    _, checks = honest
    assert {name: c.status for name, c in checks.items()} == {
        "monotone": "PASS", "large_eps": "PASS", "iterative": "PASS", "black_box": "PASS",
        "convergence": "PASS", "label_leaking": "PASS"}
    assert checks["large_eps"].numbers["eps"] == LARGE_EPS["linf"], "large_eps=None: the norm's default"


def test_masked_model_is_flagged(masked):
    _, checks = masked
    assert checks["large_eps"].status == "WARN", checks["large_eps"]
    assert checks["black_box"].status == "WARN", checks["black_box"]
    assert checks["large_eps"].numbers["accuracy"] > checks["large_eps"].numbers["chance"]
    assert checks["black_box"].numbers["square"] < checks["black_box"].numbers["pgd"]


def _results(eps, clean, curves, perturbed=None):
    rates = lambda counts: [Rate(s, 100) for s in counts]  # noqa: E731
    return Results(n_images=100, clean=Rate(clean, 100), confusion=[[clean]],
                   robustness=Curves(eps, {name: rates(c) for name, c in curves.items()}),
                   perturbed=None if perturbed is None else Curves(eps, {"fgsm": rates(perturbed)}))


def test_monotone_and_label_leaking_on_constructed_results():
    eps = [0.0, 0.01, 0.1]
    results = _results(eps, 50, {"pgd": [50, 20, 25], "worst_case": [50, 20, 20]}, perturbed=[50, 40, 90])
    mono = check_monotone(results)
    assert mono.status == "WARN" and "pgd: 20.0% at eps=0.01 -> 25.0% at eps=0.1" in mono.detail
    leak = check_label_leaking(results)
    assert leak.status == "WARN" and leak.numbers["perturbed"]["0.1"] == 90.0
    fixed = _results(eps, 50, {"pgd": [50, 20, 5], "worst_case": [50, 20, 5]}, perturbed=[50, 40, 10])
    assert check_monotone(fixed).status == "PASS" and check_label_leaking(fixed).status == "PASS"
    skipped = check_label_leaking(_results(eps, 50, {"worst_case": [50, 20, 5]}))
    assert skipped.status == "SKIP", "no perturbed accuracy (an L2 evaluation): nothing to compare"


def test_iterative_attacks_weaker_than_fgsm_are_flagged():
    eps = [0.0, 0.01, 0.03]
    results = _results(eps, 50, {"fgsm": [50, 30, 10], "pgd": [50, 25, 12], "apgd-ce": [50, 20, 5],
                                 "worst_case": [50, 20, 5]})
    check = check_iterative(results, ["pgd", "apgd-ce"])
    assert check.status == "WARN" and check.numbers["violations"] == ["pgd 12.0% > fgsm 10.0% at eps=0.03"]
    assert check_iterative(results, ["apgd-ce"]).status == "PASS"
    assert check_iterative(results, ["fab"]).status == "SKIP", "no iterative attack evaluated"
    no_fgsm = _results(eps, 50, {"pgd": [50, 25, 12], "worst_case": [50, 25, 12]})
    assert check_iterative(no_fgsm, ["pgd"]).status == "SKIP"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_large_eps_radius_is_the_norms_unless_given(norm, synthetic_batch):
    torch.manual_seed(0)
    model = PixelNet().eval()
    x, _ = synthetic_batch
    y = predict(model, x)
    loader = [(x, y)]
    results = evaluate_robustness(model, loader, [0.0, 0.01], build_attacks(["fgsm"], norm=norm), norm=norm,
                                  progress=False)
    default = run_checks(model, results, x, y, iterative=[], norm=norm, pgd_steps=2, square_queries=5)
    assert next(c for c in default if c.name == "large_eps").numbers["eps"] == LARGE_EPS[norm]
    smaller = {"linf": 0.2, "l2": 4.0}[norm]  # still large enough to fool every image of PixelNet
    given = run_checks(model, results, x, y, iterative=[], norm=norm, large_eps=smaller, pgd_steps=2,
                       square_queries=5)
    large = next(c for c in given if c.name == "large_eps")
    assert large.numbers["eps"] == smaller and large.status == "PASS", large
