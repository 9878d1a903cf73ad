import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation import Rate, evaluate_robustness, wilson_interval
from advlab.results import Results

ATTACKS = ["fgsm", {"name": "pgd", "steps": 10}]


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
    return evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(ATTACKS),
                               target=4)


def test_perturbed_accuracy_can_be_skipped_without_changing_anything_else(evaluation, trained_model, test_images):
    x, y = test_images
    loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=128)
    lean = evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(ATTACKS),
                               target=4, perturbed=False)
    assert lean.perturbed is None and evaluation.perturbed is not None
    lean.perturbed = evaluation.perturbed
    assert lean == evaluation


def test_clean_and_eps_zero_agree(evaluation):
    assert evaluation.n_images == 300
    for name in ("fgsm", "pgd", "worst_case"):
        assert evaluation.robust(name, 0.0) == evaluation.clean


def test_worst_case_is_no_better_than_any_attack_and_falls_with_eps(evaluation):
    for e in evaluation.eps:
        worst = evaluation.worst_case(e).successes
        assert worst <= evaluation.robust("fgsm", e).successes and worst <= evaluation.robust("pgd", e).successes
    accs = [r.successes for r in evaluation.robustness.rates["worst_case"]]
    assert accs[0] > accs[1] > accs[2]


def test_confusion_matrix_rows_sum_to_100(evaluation):
    cm = torch.tensor(evaluation.row_percent())
    counts = torch.tensor(evaluation.confusion)
    assert counts.sum() == 300 and counts.diag().sum() == evaluation.clean.successes
    present = counts.sum(1) > 0
    assert torch.allclose(cm[present].sum(1), torch.full((int(present.sum()),), 100.0), atol=1e-3)


def test_targeted_success_counts_images_of_other_classes(evaluation, test_images):
    success = evaluation.targeted.success
    n_other = int((test_images[1][:300] != 4).sum())
    assert all(r.n == n_other for r in success.rates["fgsm"] + success.rates["pgd"])
    assert success.at("pgd", 0.03).successes > success.at("pgd", 0.0).successes


def test_unknown_attack_name():
    with pytest.raises(ValueError, match=r"evaluation.attacks: unknown attack 'cw'"):
        build_attacks(["fgsm", "cw"])


def test_sequential_mode_gives_the_same_worst_case(trained_model, test_images, evaluation):
    x, y = test_images
    loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=128)
    fast = evaluate_robustness(trained_model, loader, [0.0, 0.003, 0.03], build_attacks(ATTACKS),
                               per_attack=False)
    assert list(fast.robustness.rates) == ["worst_case"]
    full = [r.successes for r in evaluation.robustness.rates["worst_case"]]
    seq = [r.successes for r in fast.robustness.rates["worst_case"]]
    # Attacking a subset of a batch can round differently in the last bit; allow one image.
    assert all(abs(a - b) <= 1 for a, b in zip(full, seq)), (full, seq)


def test_perturbed_accuracy_attacks_every_image(evaluation):
    pert = evaluation.perturbed.rates["fgsm"]
    assert pert[0] == evaluation.clean
    # FGSM on all images: at least as many correct as robust accuracy (which also requires clean correctness)
    fgsm_robust = evaluation.robustness.rates["fgsm"]
    assert all(p.successes >= r.successes for p, r in zip(pert, fgsm_robust))


def test_evaluate_any_module_with_declared_normalisation(trained_model, test_images):
    import advlab
    from advlab.models import SeedCNN

    x, y = test_images[0][:100], test_images[1][:100]
    bare = SeedCNN(normalize=False)  # expects normalised input, like many third-party models
    bare.load_state_dict({k: v for k, v in trained_model.state_dict().items() if not k.startswith("normalize.")})
    norm = trained_model.normalize
    declared = advlab.evaluate(bare, x, y, eps=[0.0, 0.01], attacks=["fgsm", {"name": "pgd", "steps": 5}], checks=False,
                               normalization=(norm.mean.flatten().tolist(), norm.std.flatten().tolist()))
    builtin = advlab.evaluate(trained_model, (x * 255).round().to(torch.uint8), y, eps=[0.0, 0.01],
                              attacks=["fgsm", {"name": "pgd", "steps": 5}], checks=False)
    assert declared.clean == builtin.clean
    for name in ("fgsm", "pgd", "worst_case"):
        a = [r.successes for r in declared.robustness.rates[name]]
        b = [r.successes for r in builtin.robustness.rates[name]]
        assert all(abs(i - j) <= 1 for i, j in zip(a, b)), (name, a, b)
    with pytest.raises(ValueError, match="images and labels must have the same length"):
        advlab.evaluate(trained_model, x, y[:5], eps=[0.01])


def test_fab_curve_comes_from_one_minimum_norm_run(trained_model, test_images):
    from dataclasses import replace

    from advlab.attacks.fab import minimal_norms
    from advlab.attacks.registry import SPECS, Attack

    calls = []
    counting = replace(SPECS["fab"], minimal_norms=lambda *a, **k: calls.append(1) or minimal_norms(*a, **k))
    x, y = test_images[0][:64], test_images[1][:64]
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    res = evaluate_robustness(trained_model, loader, [0.0, 0.002, 0.005, 0.01, 0.02],
                              {"fab": Attack(counting, settings={"steps": 10})})
    assert len(calls) == 1, "one FAB run per batch serves every eps"
    acc = [r.successes for r in res.robustness.rates["fab"]]
    assert acc == sorted(acc, reverse=True) and acc[-1] < acc[0]


def test_results_round_trip_through_json(evaluation, tmp_path):
    evaluation.name, evaluation.config = "x", {"evaluation": {"norm": "linf"}}
    loaded = Results.load(evaluation.save(tmp_path / "results.json"))
    assert loaded == evaluation
    assert loaded.robust("pgd", 0.03) == evaluation.robustness.rates["pgd"][2]
    with pytest.raises(KeyError, match="eps=0.5 was not evaluated"):
        loaded.worst_case(0.5)
    with pytest.raises(KeyError, match="'apgd-t' was not evaluated"):
        loaded.robust("apgd-t", 0.03)


def test_first_version_results_files_still_load(evaluation):
    old = evaluation.to_dict()
    del old["schema"]
    assert Results.from_dict(old).robustness == evaluation.robustness
    with pytest.raises(ValueError, match="unknown schema"):
        Results.from_dict({**old, "schema": "advlab-results-v99"})


@pytest.mark.slow  # a run through the command line's code and the API (10 s)
def test_command_line_and_python_api_give_identical_numbers(trained_model, cifar_root, tmp_path):
    """The CLI's evaluation of a checkpoint and advlab.evaluate on the same model, images and
    settings (attacks with settings, a random-start attack, L2, the checks) agree exactly."""
    import advlab
    from advlab.checkpoint import save_checkpoint
    from advlab.cli import run
    from advlab.data import load_split
    from helpers import config

    save_checkpoint(tmp_path / "model.pt", trained_model, {"name": "seed_cnn"})
    attacks = ["fgsm", {"name": "pgd", "steps": 5, "random_start": True, "restarts": 2}, {"name": "square", "queries": 30}]
    cfg = config("+experiment=evaluate", f"checkpoint={tmp_path / 'model.pt'}", "logger=none", "data.max_test_images=80",
                 "norm=l2", "evaluation.eps=[0,0.25,1.0]", f"evaluation.attacks={_override(attacks)}",
                 "evaluation.checks.n_images=40", "evaluation.checks.square_queries=30", "seed=3",
                 f"data.root={cifar_root}", f"+output_dir={tmp_path / 'run'}")
    cli = run(cfg)
    x, y = load_split(cifar_root, "test")
    api = advlab.evaluate(trained_model, x[:80], y[:80], eps=[0, 0.25, 1.0], attacks=attacks, norm="l2", seed=3,
                          checks_n_images=40, checks_square_queries=30)
    assert cli.robustness == api.robustness and cli.clean == api.clean and cli.confusion == api.confusion
    assert [c.to_dict() for c in cli.checks] == [c.to_dict() for c in api.checks]
    assert Results.load(tmp_path / "run" / "results.json").robustness == api.robustness


def _override(entries) -> str:
    """A list of attack entries as a Hydra command-line value."""
    def one(e):
        return e if isinstance(e, str) else "{" + ",".join(f"{k}:{v}" for k, v in e.items()) + "}"
    return "[" + ",".join(one(e) for e in entries) + "]"
