import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation import Rate, evaluate_robustness, wilson_interval


def test_wilson_interval_known_values():
    low, high = wilson_interval(628, 1000)
    assert low == pytest.approx(0.5976, abs=1e-3) and high == pytest.approx(0.6573, abs=1e-3)
    assert wilson_interval(0, 1000)[0] == 0 and wilson_interval(0, 1000)[1] == pytest.approx(0.00383, abs=1e-4)
    assert wilson_interval(1000, 1000)[1] == 1
    assert str(Rate(628, 1000)) == "62.8% [59.8, 65.7]"
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@pytest.fixture(scope="module")
def evaluation(trained_model, test_images):
    x, y = test_images
    loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=128)
    return evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(["fgsm", "pgd"], pgd_steps=10),
                               target=4)


def test_perturbed_accuracy_can_be_skipped_without_changing_anything_else(evaluation, trained_model, test_images):
    x, y = test_images
    loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=128)
    lean = evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(["fgsm", "pgd"], pgd_steps=10),
                               target=4, perturbed=False)
    assert "perturbed" not in lean and "perturbed" in evaluation
    assert lean == {k: v for k, v in evaluation.items() if k != "perturbed"}


def test_clean_and_eps_zero_agree(evaluation):
    assert evaluation["n_images"] == 300
    clean = evaluation["clean"]["successes"]
    for name in ("fgsm", "pgd", "worst_case"):
        assert evaluation["robustness"]["accuracy"][name][0]["successes"] == clean


def test_worst_case_is_no_better_than_any_attack_and_falls_with_eps(evaluation):
    rob = evaluation["robustness"]["accuracy"]
    for i in range(3):
        worst = rob["worst_case"][i]["successes"]
        assert worst <= rob["fgsm"][i]["successes"] and worst <= rob["pgd"][i]["successes"]
    accs = [r["successes"] for r in rob["worst_case"]]
    assert accs[0] > accs[1] > accs[2]


def test_confusion_matrix_rows_sum_to_100(evaluation):
    cm = torch.tensor(evaluation["confusion_matrix"]["row_percent"])
    counts = torch.tensor(evaluation["confusion_matrix"]["counts"])
    assert counts.sum() == 300 and counts.diag().sum() == evaluation["clean"]["successes"]
    present = counts.sum(1) > 0
    assert torch.allclose(cm[present].sum(1), torch.full((int(present.sum()),), 100.0), atol=1e-3)


def test_targeted_success_counts_images_of_other_classes(evaluation, test_images):
    tgt = evaluation["targeted"]
    n_other = int((test_images[1][:300] != 4).sum())
    assert all(r["n"] == n_other for r in tgt["success"]["fgsm"] + tgt["success"]["pgd"])
    assert tgt["success"]["pgd"][2]["successes"] > tgt["success"]["pgd"][0]["successes"]


def test_unknown_attack_name():
    with pytest.raises(ValueError, match=r"evaluation.attacks: unknown attack\(s\) \[.cw.\]"):
        build_attacks(["fgsm", "cw"])


def test_sequential_mode_gives_the_same_worst_case(trained_model, test_images, evaluation):
    x, y = test_images
    loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=128)
    fast = evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(["fgsm", "pgd"], pgd_steps=10),
                               per_attack=False)
    assert list(fast["robustness"]["accuracy"]) == ["worst_case"]
    full = [r["successes"] for r in evaluation["robustness"]["accuracy"]["worst_case"]]
    seq = [r["successes"] for r in fast["robustness"]["accuracy"]["worst_case"]]
    # Attacking a subset of a batch can round differently in the last bit; allow one image.
    assert all(abs(a - b) <= 1 for a, b in zip(full, seq)), (full, seq)


def test_perturbed_accuracy_attacks_every_image(evaluation):
    pert = evaluation["perturbed"]
    assert pert["attack"] == "fgsm" and pert["accuracy"][0]["successes"] == evaluation["clean"]["successes"]
    # FGSM on all images: at least as many correct as robust accuracy (which also requires clean correctness)
    fgsm_robust = evaluation["robustness"]["accuracy"]["fgsm"]
    assert all(p["successes"] >= r["successes"] for p, r in zip(pert["accuracy"], fgsm_robust))


def test_evaluate_any_module_with_declared_normalisation(trained_model, test_images):
    import advlab
    from advlab.models import SeedCNN

    x, y = test_images[0][:100], test_images[1][:100]
    bare = SeedCNN(normalize=False)  # expects normalised input, like many third-party models
    bare.load_state_dict({k: v for k, v in trained_model.state_dict().items() if not k.startswith("normalize.")})
    norm = trained_model.normalize
    declared = advlab.evaluate(bare, x, y, eps=[0.0, 0.01], attacks=["fgsm", "pgd"], pgd_steps=5, checks=False,
                               normalization=(norm.mean.flatten().tolist(), norm.std.flatten().tolist()))
    builtin = advlab.evaluate(trained_model, (x * 255).round().to(torch.uint8), y, eps=[0.0, 0.01],
                              attacks=["fgsm", "pgd"], pgd_steps=5, checks=False)
    assert declared["clean"] == builtin["clean"]
    for name in ("fgsm", "pgd", "worst_case"):
        a = [r["successes"] for r in declared["robustness"]["accuracy"][name]]
        b = [r["successes"] for r in builtin["robustness"]["accuracy"][name]]
        assert all(abs(i - j) <= 1 for i, j in zip(a, b)), (name, a, b)
    with pytest.raises(ValueError, match="images and labels must have the same length"):
        advlab.evaluate(trained_model, x, y[:5], eps=[0.01])


def test_fab_curve_comes_from_one_minimum_norm_run(trained_model, test_images, monkeypatch):
    from advlab.attacks import registry

    calls = []
    real = registry.minimal_norms
    monkeypatch.setattr(registry, "minimal_norms", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = test_images[0][:64], test_images[1][:64]
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    res = evaluate_robustness(trained_model, loader, [0.0, 0.002, 0.005, 0.01, 0.02],
                              build_attacks(["fab"], fab_steps=10))
    assert len(calls) == 1, "one FAB run per batch serves every eps"
    acc = [r["successes"] for r in res["robustness"]["accuracy"]["fab"]]
    assert acc == sorted(acc, reverse=True) and acc[-1] < acc[0]
