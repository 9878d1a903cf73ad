"""The per-image record (advlab.evaluation.record): the evaluation's source of truth, its file, and what it makes
possible: adversarial examples saved and fed back, merging runs, the transfer check, resuming a killed
evaluation, the binarization test."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import advlab
from advlab.attacks.registry import build_attacks
from advlab.errors import UserFileError
from advlab.evaluation.adversarial import read_adversarial, write_adversarial
from advlab.evaluation.binarization import binarization_test
from advlab.evaluation.record import FILE, PerImage, col
from advlab.evaluation.resume import BatchStore
from advlab.results import Results
from helpers import REPO, assert_in_ball

EPS = [0.0, 0.003, 0.01]
QUICK = dict(checks=False, perturbed=True, resume=False, progress=False)


@pytest.fixture(scope="module")
def evaluated(trained_model, test_images):
    x, y = test_images[0][:200], test_images[1][:200]
    return advlab.evaluate(trained_model, x, y, eps=EPS, attacks=["fgsm", {"name": "pgd", "steps": 10}], target=4,
                           batch_size=64, save_adversarial=True, **QUICK)


def _csv(path) -> dict[str, list[str]]:
    """The saved record read back with the csv module alone: every number must be recomputable from it."""
    import csv

    with gzip.open(path, "rt") as f:
        rows = list(csv.reader(f))
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def test_every_number_of_results_json_is_an_aggregate_of_the_per_image_table(evaluated, tmp_path):
    evaluated.save(tmp_path / "results.json")
    saved = json.loads((tmp_path / "results.json").read_text())
    table = _csv(tmp_path / saved["per_image"]["file"])
    n = len(table["index"])
    ones = lambda column: sum(v == "1" for v in table[column])  # noqa: E731
    assert saved["n_images"] == n == 200 and table["index"] == [str(i) for i in range(200)]
    assert saved["clean"]["successes"] == sum(a == b for a, b in zip(table["label"], table["clean_pred"]))
    counts = np.zeros((10, 10), dtype=int)
    for a, b in zip(table["label"], table["clean_pred"]):
        counts[int(a), int(b)] += 1
    assert saved["confusion_matrix"]["counts"] == counts.tolist()
    rob = saved["robustness"]
    for i, e in enumerate(rob["eps"]):
        for attack in ("fgsm", "pgd", "worst_case"):
            assert rob["accuracy"][attack][i]["successes"] == ones(col("survived", attack, e)), (attack, e)
        worst = ones(col("survived", "worst_case", e))
        assert worst == sum(b == "" for b in table[col("broken_by", None, e)]), "robust = nothing broke it"
        assert saved["perturbed"]["accuracy"][i]["successes"] == ones(col("perturbed", None, e))
        others = sum(lab != "4" for lab in table["label"])
        hits = saved["targeted"]["success"]
        for attack in hits:
            assert hits[attack][i] == {**hits[attack][i], "successes": ones(col("targeted", attack, e)), "n": others}
    # the worst case is the AND of the attacks, eps increasing
    first, last = rob["eps"][1], rob["eps"][2]
    for j in range(n):
        broke = any(table[col("survived", a, e)][j] == "0" for a in ("fgsm", "pgd") for e in (first, last))
        assert (table[col("survived", "worst_case", last)][j] == "1") == (table["label"][j] == table["clean_pred"][j]
                                                                          and not broke)


def test_the_record_saves_loads_and_reads_in_one_line_with_pandas(evaluated, tmp_path):
    evaluated.save(tmp_path / "results.json")
    loaded = advlab.load_results(tmp_path)
    assert loaded.per_image == evaluated.per_image, "margins kept at float32, survival exactly"
    assert loaded == evaluated
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(tmp_path / FILE)
    assert len(frame) == 200 and frame[col("survived", "pgd", 0.01)].sum() == evaluated.robust("pgd", 0.01).successes
    assert {"index", "label", "clean_pred", "clean_margin", col("margin", "pgd", 0.01),
            col("broken_by", None, 0.01)} <= set(frame.columns)
    # margins: > 0 exactly where the image is still correct
    margin, survived = frame[col("margin", "pgd", 0.01)], frame[col("survived", "pgd", 0.01)]
    attacked = survived.notna()
    assert ((margin[attacked] > 0) == (survived[attacked] == 1)).all()


def test_saved_adversarial_examples_are_the_worst_case_points_and_feed_back(evaluated, trained_model, test_images,
                                                                            tmp_path):
    x, y = test_images[0][:200], test_images[1][:200]
    record = evaluated.per_image
    write_adversarial(tmp_path / "adversarial", evaluated.adversarial, y, record.columns["index"])
    for e in EPS:
        x_adv, labels, index = read_adversarial(tmp_path, e)
        assert torch.equal(labels, y) and index.tolist() == list(range(200))
        assert_in_ball(x_adv, x, e, "linf")
        with torch.no_grad():
            fooled = (trained_model(x_adv).argmax(1) != y).numpy()
        robust = record.worst(e)
        assert not fooled[robust].any(), "x itself where nothing broke the image"
        assert fooled[~robust & record.correct].all(), "a point that fools the model where an attack broke it"
    # fed back: data=npz over the saved file is a test set of float images
    from advlab.data import ImageDataModule

    dm = ImageDataModule("npz", test=str(tmp_path / "adversarial" / "eps_0.01.npz"))
    dm.setup("test")
    images, _ = dm.test_set.tensors
    assert images.dtype == torch.float32 and torch.equal(images, read_adversarial(tmp_path, 0.01)[0])
    again = advlab.evaluate(trained_model, images, y, eps=[0.0], attacks=["fgsm"], **QUICK)
    assert again.clean.successes == evaluated.worst_case(0.01).successes


@pytest.mark.slow  # three evaluations, one with 1000 Square queries (15 s)
def test_a_square_only_evaluation_merged_into_an_fgsm_pgd_run_is_the_run_with_all_three(trained_model, test_images,
                                                                                       tmp_path):
    """The union of a finished FGSM+PGD run and Square run on its survivors equals one run of the three in
    sequence: the same worst case, image by image; the worst case only went down; the columns name their runs."""
    x, y = test_images[0][:120], test_images[1][:120]
    square, pgd, eps = {"name": "square", "queries": 1000}, {"name": "pgd", "steps": 3}, [0.0, 0.01, 0.03]
    common = dict(eps=eps, batch_size=40, per_attack=False, **QUICK)
    first = advlab.evaluate(trained_model, x, y, attacks=["fgsm", pgd], **common)
    first.save(tmp_path / "run" / "results.json")
    merged = advlab.evaluate(trained_model, x, y, attacks=[square], merge=str(tmp_path / "run"),
                             source="square run", **common)
    whole = advlab.evaluate(trained_model, x, y, attacks=["fgsm", pgd, square], **common)
    for e in eps:
        assert merged.worst_case(e) == whole.worst_case(e), e
        assert np.array_equal(merged.per_image.worst(e), whole.per_image.worst(e))
        assert merged.worst_case(e).successes <= first.worst_case(e).successes
    assert merged.worst_case(0.03).successes < first.worst_case(0.03).successes, "Square broke some survivors"
    record = merged.per_image
    assert record.attacks == ["fgsm", "pgd", "square"]
    assert record.sources == {"fgsm": str(tmp_path / "run"), "pgd": str(tmp_path / "run"), "square": "square run"}
    assert merged.provenance["merged_from"]["run"] == str(tmp_path / "run")
    assert any("merged into" in note for note in merged.notes)


def test_merging_runs_of_another_model_data_or_eps_is_refused_in_one_line(trained_model, test_images, tmp_path):
    x, y = test_images[0][:40], test_images[1][:40]
    advlab.evaluate(trained_model, x, y, eps=EPS, attacks=["fgsm"], **QUICK).save(tmp_path / "run" / "results.json")
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    cases = [(other, x, y, EPS, "evaluated another model"), (trained_model, x[:30], y[:30], EPS, "other test data"),
             (trained_model, x, y, [0.0, 0.02], "evaluated eps")]
    for model, images, labels, eps, match in cases:
        with pytest.raises(UserFileError, match=match) as error:
            advlab.evaluate(model, images, labels, eps=eps, attacks=["pgd"], merge=str(tmp_path / "run"), **QUICK)
        assert "\n" not in str(error.value)


class Rounded(nn.Module):
    """A gradient-masking input layer: the image is rounded to 4 levels, so every input gradient is zero."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


def test_the_transfer_check_flags_a_model_whose_masked_gradients_hide_what_a_surrogate_finds(trained_model,
                                                                                             test_images, tmp_path):
    """White-box FGSM and PGD see a zero gradient through the rounding layer; the same network without it, as a
    surrogate, gives adversarial examples that break the masked model: the transfer check warns, and the worst
    case includes the transfer attack."""
    x, y = test_images[0][:100], test_images[1][:100]
    eps = [0.0, 0.1]
    surrogate = advlab.evaluate(trained_model, x, y, eps=eps, attacks=["fgsm", "pgd"], save_adversarial=True, **QUICK)
    surrogate.save(tmp_path / "surrogate" / "results.json")
    write_adversarial(tmp_path / "surrogate" / "adversarial", surrogate.adversarial, y,
                      surrogate.per_image.columns["index"])
    masked = Rounded(trained_model).eval()
    # The checks on a few images with a short PGD: the transfer check reads the record, not the checks' sample.
    lean = dict(QUICK, checks=True, checks_n_images=20, checks_square_queries=20, convergence=False)
    attacks = ["fgsm", {"name": "pgd", "steps": 10}]
    results = advlab.evaluate(masked, x, y, eps=eps, attacks=attacks, transfer_from=str(tmp_path / "surrogate"),
                              **lean)
    check = results.check("transfer")
    assert check.status == "WARN", check
    assert results.robust("transfer", 0.1).successes < results.robust("pgd", 0.1).successes
    assert results.worst_case(0.1).successes <= results.robust("transfer", 0.1).successes
    assert "transfer" in results.per_image.attacks
    honest = advlab.evaluate(trained_model, x, y, eps=eps, attacks=attacks, transfer_from=str(tmp_path / "surrogate"),
                             **lean)
    assert honest.check("transfer").status == "PASS", "its own examples transfer no better than its own attacks"


@pytest.mark.slow  # 60 readouts fitted and attacked (15 s)
def test_the_binarization_test_passes_honest_pgd_and_fails_a_deliberately_weak_attack(trained_model, test_images):
    x, y = test_images
    honest = build_attacks([{"name": "pgd", "steps": 20, "step_size": 0.01 / 4}])
    weak = build_attacks([{"name": "pgd", "steps": 1, "step_size": 1e-5}])
    passed = binarization_test(trained_model, x, y, honest, eps=0.01, n_images=30, n_inner=49)
    failed = binarization_test(trained_model, x, y, weak, eps=0.01, n_images=30, n_inner=49)
    assert passed.n_images == failed.n_images >= 25, "readouts separate their training points on most images"
    assert passed.passed and passed.share >= 0.95, passed.summary()
    assert not failed.passed and failed.share < 0.5, failed.summary()
    assert set(passed.to_dict()) >= {"share", "status", "found", "skipped"}


def test_the_batch_store_keeps_finished_batches_safely(tmp_path):
    store = BatchStore(tmp_path / "store")
    assert store.load(0) is None
    store.save(0, {"index": np.arange(3), "margin:pgd@0.01": np.array([0.5, np.nan, -1.0])},
               {"0.01": np.zeros((3, 1, 2, 2), np.float32)})
    columns, arrays = store.load(0)
    assert columns["index"].tolist() == [0, 1, 2] and np.isnan(columns["margin:pgd@0.01"][1])
    assert arrays["0.01"].shape == (3, 1, 2, 2) and store.finished() == 1
    store.clear()
    assert not (tmp_path / "store").exists()


RESUMABLE = """
import sys, time, torch
import advlab
from advlab.evaluation import robustness
from helpers import TinyNet
slow = sys.argv[2] == "slow"
real = robustness._measure_batch
def measured(*args, **kwargs):
    out = real(*args, **kwargs)
    if slow:
        time.sleep(0.5)  # time for the test to kill it between batches
    return out
robustness._measure_batch = measured
torch.manual_seed(0)
model = TinyNet().eval()
g = torch.Generator().manual_seed(1)
x, y = torch.rand(96, 3, 16, 16, generator=g), torch.randint(0, 10, (96,), generator=g)
results = advlab.evaluate(model, x, y, eps=[0.0, 0.05, 0.1], attacks=["fgsm", {"name": "pgd", "random_start": True,
                          "steps": 3}], batch_size=8, checks=False, progress=False, cache_dir=sys.argv[1])
results.save(sys.argv[3])
"""


@pytest.mark.slow  # runs and kills a subprocess
def test_a_killed_evaluation_resumes_from_its_last_finished_batch_to_the_uninterrupted_record(tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(RESUMABLE)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cache = tmp_path / "cache"
    run = [sys.executable, str(script), str(cache)]
    killed = subprocess.Popen([*run, "slow", str(tmp_path / "killed" / "results.json")], env=env)
    deadline = time.monotonic() + 120
    while len(list(cache.rglob("batch*.npz"))) < 4:
        assert killed.poll() is None and time.monotonic() < deadline, "the evaluation should still be running"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    kept = len(list(cache.rglob("batch*.npz")))
    assert 4 <= kept < 12, "killed halfway: some of its 12 batches finished"
    subprocess.run([*run, "fast", str(tmp_path / "resumed" / "results.json")], env=env, check=True, timeout=300)
    assert not list(cache.rglob("batch*.npz")), "the finished evaluation forgets its batches"
    subprocess.run([*run, "fast", str(tmp_path / "whole" / "results.json")], env=env, check=True, timeout=300)
    resumed, whole = (Results.load(tmp_path / kind / "results.json") for kind in ("resumed", "whole"))
    assert resumed.per_image == whole.per_image and resumed == whole
    assert [gzip.decompress((tmp_path / kind / FILE).read_bytes()) for kind in ("resumed", "whole")] == \
        [gzip.decompress((tmp_path / "whole" / FILE).read_bytes())] * 2, "the same file, byte for byte"


def test_results_keep_a_record_of_every_image(evaluated):
    record = evaluated.per_image
    assert isinstance(record, PerImage) and len(record) == evaluated.n_images
    assert record.attacks == ["fgsm", "pgd"] and record.complete == ["fgsm", "pgd"]
    assert len(record.fingerprint["model"]) == len(record.fingerprint["data"]) == 64
    broken = record.columns[col("broken_by", None, 0.01)]
    assert set(broken) <= {"", "clean", "fgsm", "pgd"}
    assert (broken == "clean").sum() == evaluated.n_images - evaluated.clean.successes


def test_a_surrogate_checkpoint_is_attacked_for_the_transfer_examples(trained_model, test_images, tmp_path):
    """transfer_from=MODEL.pt: the surrogate is attacked with the evaluation's attacks; its examples break the
    masked copy of the same network as they break the surrogate."""
    from advlab.checkpoint import save_checkpoint

    x, y = test_images[0][:60], test_images[1][:60]
    save_checkpoint(tmp_path / "surrogate.pt", trained_model, {"name": "seed_cnn"})
    results = advlab.evaluate(Rounded(trained_model).eval(), x, y, eps=[0.0, 0.1], attacks=["fgsm", "pgd"],
                              transfer_from=str(tmp_path / "surrogate.pt"), **QUICK)
    own = advlab.evaluate(trained_model, x, y, eps=[0.0, 0.1], attacks=["fgsm", "pgd"], **QUICK)
    assert results.robust("transfer", 0.1).successes < results.robust("pgd", 0.1).successes
    assert results.per_image.sources["transfer"] == str(tmp_path / "surrogate.pt")
    assert own.worst_case(0.1).successes <= results.robust("transfer", 0.1).successes + 3
