"""Fast AutoAttack (advlab.attacks.fast): its contract, its escalation rules, and its strength
against standard AutoAttack on a briefly trained real model. The contract every registered attack
keeps is also checked for it by test_attack_contract.py."""

import pytest
import torch
from torch import nn

from advlab.attacks import autoattack
from advlab.attacks.fast import fast_autoattack
from advlab.attacks.registry import build_attack
from helpers import PixelNet, assert_in_ball, predict

SMALL = dict(steps=5, queries=50, full_queries=100, n_target_classes=2)


class Rounded(nn.Module):
    """A masked model: the input is rounded to `levels` levels, so the input gradient is exactly zero,
    yet a perturbation that moves pixels across a rounding threshold changes the prediction.
    `decoy` adds a tiny smooth term whose gradient is non-zero but points nowhere useful."""

    def __init__(self, model: nn.Module, levels: int = 4, decoy: float = 0.0):
        super().__init__()
        self.model, self.levels, self.decoy = model, levels, decoy
        g = torch.Generator().manual_seed(7)
        self.register_buffer("direction", torch.randn(10, 3 * 16 * 16, generator=g))

    def forward(self, x):
        q = torch.round(x * (self.levels - 1)) / (self.levels - 1)
        return self.model(q) + self.decoy * x.flatten(1) @ self.direction.t()


@pytest.fixture
def pixel_model():
    torch.manual_seed(0)
    return PixelNet().eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 3, 16, 16, generator=g)


def test_contract_and_determinism(pixel_model, batch):
    x = batch
    y = predict(pixel_model, x)
    y[:4] = (y[:4] + 1) % 10  # four images misclassified at x: returned as they are, named "clean"
    pixel_model.train()
    x_before, rng_before = x.clone(), torch.get_rng_state()
    x_adv, stages = fast_autoattack(pixel_model, x, y, 0.03, seed=2, return_stages=True, **SMALL)
    assert torch.equal(x, x_before) and torch.equal(torch.get_rng_state(), rng_before)
    assert pixel_model.training and all(p.grad is None for p in pixel_model.parameters())
    assert_in_ball(x_adv, x, 0.03, "linf")
    fooled = predict(pixel_model.eval(), x_adv) != y
    assert stages.broken_by[:4] == ["clean"] * 4 and torch.equal(x_adv[:4], x[:4])
    # every image is fooled with the stage that did it named, or returned as it was
    assert all((f and b) or (not f and b == "") for f, b in zip(fooled.tolist(), stages.broken_by))
    assert torch.equal(x_adv[~fooled], x[~fooled])
    again = fast_autoattack(pixel_model, x, y, 0.03, seed=2, return_stages=True, **SMALL)
    assert torch.equal(again[0], x_adv) and again[1].broken_by == stages.broken_by
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(fast_autoattack(pixel_model, x, y, 0.03, seed=g1, **SMALL),
                       fast_autoattack(pixel_model, x, y, 0.03, seed=g2, **SMALL))
    assert torch.equal(fast_autoattack(pixel_model, x, y, 0.0), x)
    # the registry builds it with its settings
    attack = build_attack("autoattack-fast", seed=2, **SMALL)
    assert torch.equal(attack(pixel_model, x, y, 0.03), x_adv)


@pytest.mark.parametrize("decoy", [0.0, 1e-3], ids=["zero-gradient", "misleading-gradient"])
def test_a_masked_model_is_detected_and_escalated(pixel_model, batch, decoy):
    """Gradients that are zero (or point nowhere) but Square fools the model: the model is judged
    masked and every image still robust gets the full black-box budget, or the whole AutoAttack."""
    model = Rounded(pixel_model, decoy=decoy).eval()
    x = batch
    y = predict(model, x)
    x_adv, stages = fast_autoattack(model, x, y, 0.04, return_stages=True, **SMALL)
    assert stages.masked
    assert stages.broken_by.count("square") > 0.05 * len(y)
    survivors = [i for i, b in enumerate(stages.broken_by) if b in ("", "square-full")]
    assert survivors and all(stages.escalated[i] == "masked" for i in survivors)
    assert all(not stages.escalated[i] for i, b in enumerate(stages.broken_by) if b in ("square", "apgd-ce", "apgd-t"))
    if decoy == 0.0:  # the exactly flat gradient is seen before any gradient attack is run
        assert "apgd-ce" not in stages.seconds and "apgd-t" not in stages.seconds
    assert_in_ball(x_adv, x, 0.04, "linf")
    fooled = predict(model, x_adv) != y
    assert fooled.sum() == sum(1 for b in stages.broken_by if b)

    full = fast_autoattack(model, x, y, 0.04, return_stages=True, masked_escalation="autoattack", **SMALL)[1]
    assert full.masked and "autoattack" in full.seconds and "square-full" not in full.seconds
    assert all(b in ("", "square", "apgd-ce", "apgd-t") or b.startswith("autoattack:") for b in full.broken_by)


def test_honest_model_escalates_only_near_misses(pixel_model, batch):
    """PixelNet's gradients are honest: no masking. boundary=1 sends every image still robust to
    AutoAttack (reason boundary); escalate=False stops after the short Square."""
    x = batch
    y = predict(pixel_model, x)
    eps = 0.002  # small enough that some images stay robust
    _, stages = fast_autoattack(pixel_model, x, y, eps, return_stages=True, boundary=1.0, **SMALL)
    assert not stages.masked
    robust_before = [i for i, e in enumerate(stages.escalated) if e]
    assert robust_before and all(stages.escalated[i] in ("boundary", "disagree") for i in robust_before)
    assert "autoattack" in stages.seconds
    _, lazy = fast_autoattack(pixel_model, x, y, eps, return_stages=True, escalate=False, **SMALL)
    assert not any(lazy.escalated) and "autoattack" not in lazy.seconds


def test_escalation_runs_only_what_fast_mode_skipped(pixel_model, batch, monkeypatch):
    """An escalated image gets the part of AutoAttack fast mode did not run: near misses (boundary) the
    APGD-T targets after the first n_target_classes and FAB-T; disagreements also the full Square; images
    with a flat gradient (or a masked model's, masked_escalation="autoattack") the whole ensemble."""
    import importlib

    import advlab.attacks.fast as fast_module

    aa_module = importlib.import_module("advlab.attacks.autoattack")  # the package exports a function of that name
    groups = list(fast_module.escalation_groups(["", "boundary", "flat", "disagree", "boundary", "masked"], 3))
    assert groups == [([5], ("apgd-ce", "apgd-t", "fab-t", "square"), 1),
                      ([2], ("apgd-ce", "apgd-t", "fab-t", "square"), 1),
                      ([3], ("apgd-t", "fab-t", "square"), 4),
                      ([1, 4], ("apgd-t", "fab-t"), 4)]

    runs, targets = [], []
    real_run, real_targeted = fast_module.run_ensemble, aa_module.run_apgd_targeted

    def spy_run(model, x, y, eps, stages, **kwargs):
        runs.append((len(x), [name for name, _ in stages]))
        return real_run(model, x, y, eps, stages, **kwargs)

    def spy_targeted(*args, first_target=1, **kwargs):
        targets.append(first_target)
        return real_targeted(*args, first_target=first_target, **kwargs)

    monkeypatch.setattr(fast_module, "run_ensemble", spy_run)
    monkeypatch.setattr(aa_module, "run_apgd_targeted", spy_targeted)
    x = batch
    y = predict(pixel_model, x)
    _, stages = fast_autoattack(pixel_model, x, y, 0.002, return_stages=True, boundary=1.0, **SMALL)
    near = sum(1 for e in stages.escalated if e == "boundary")
    assert near and (near, ["apgd-t", "fab-t"]) in runs
    assert all(names in (["apgd-t", "fab-t"], ["apgd-t", "fab-t", "square"]) for _, names in runs)
    assert targets and set(targets) == {SMALL["n_target_classes"] + 1}  # the targets fast mode attacked are skipped


def test_bad_settings_name_themselves(pixel_model, batch):
    y = predict(pixel_model, batch)
    for bad, name in (({"boundary": 1.5}, "boundary"), ({"masking_share": -0.1}, "masking_share"),
                      ({"masked_escalation": "pgd"}, "masked_escalation"),
                      ({"n_target_classes": 10}, "n_target_classes"),
                      ({"queries": 0}, "queries"), ({"seed": -1}, "seed")):
        with pytest.raises(ValueError, match=name):
            fast_autoattack(pixel_model, batch, y, 0.03, **bad)


@pytest.mark.slow  # standard AutoAttack at its full budget
def test_as_strong_as_autoattack_on_a_trained_model(trained_model, test_images):
    """Real images, a seed CNN after 2 epochs: fast mode's robust accuracy at 2/255 is within one
    image of standard AutoAttack's (both at their full default budgets), and the model is not masked."""
    x, y = test_images[0][:100], test_images[1][:100]
    eps = 2 / 255
    fast, stages = fast_autoattack(trained_model, x, y, eps, return_stages=True)
    standard = autoattack(trained_model, x, y, eps)
    robust_fast = int((predict(trained_model, fast) == y).sum())
    robust_standard = int((predict(trained_model, standard) == y).sum())
    assert robust_fast <= robust_standard + 1, (robust_fast, robust_standard)
    assert 0 < robust_standard < int((predict(trained_model, x) == y).sum())  # the comparison means something
    assert not stages.masked


def test_evaluation_falls_back_to_full_autoattack_when_the_checks_warn(pixel_model, batch):
    """On the rounded (masked) model the large-eps check warns: fast mode must not judge it alone; the full
    AutoAttack also runs, on the images the other attacks left robust only (nothing else runs again), the
    worst case includes it, and the results say why. On the honest model nothing changes."""
    import advlab
    from advlab.evaluation.pipeline import MASKING_CHECKS

    fast = {"name": "autoattack-fast", **{k: v for k, v in SMALL.items() if k != "queries"}, "queries": 50}
    cheap = dict(checks_n_images=32, checks_square_queries=50, convergence=False, perturbed=False, seed=0)
    masked = Rounded(pixel_model).eval()
    y = predict(masked, batch)
    results = advlab.evaluate(masked, batch, y, eps=[0.03], attacks=["fgsm", fast], **cheap)
    assert any(c.status == "WARN" and c.name in MASKING_CHECKS for c in results.checks)
    record = results.per_image
    assert record.attacks[-1] == "autoattack" and "autoattack" not in record.complete, "run on the survivors only"
    assert (record.survived("autoattack", 0.03) >= 0).sum() == record.worst(0.03).sum() + (
        record.survived("autoattack", 0.03) == 0).sum(), "it attacked exactly the images the others left robust"
    assert any("full AutoAttack" in note for note in results.notes)
    # the full ensemble's Square runs at full_queries: at least as strong as fast mode on this model
    alone = advlab.evaluate(masked, batch, y, eps=[0.03], attacks=["fgsm", fast], checks=False, perturbed=False)
    assert results.worst_case(0.03).successes <= alone.worst_case(0.03).successes

    y = predict(pixel_model, batch)
    honest = advlab.evaluate(pixel_model, batch, y, eps=[0.03], attacks=["fgsm", fast], **cheap)
    assert not any(c.status == "WARN" and c.name in MASKING_CHECKS for c in honest.checks)
    assert "autoattack-fast" in honest.attacks and not honest.notes
