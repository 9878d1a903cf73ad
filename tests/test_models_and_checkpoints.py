import os
import pickle

import pytest
import torch

import advlab
from advlab.checkpoint import read_checkpoint, save_checkpoint
from advlab.io import write_text
from advlab.models import SeedCNN, build_model


def test_seed_cnn_is_the_study_architecture():
    model = build_model("seed_cnn")
    shapes = [tuple(p.shape) for n, p in model.named_parameters() if n.endswith("weight")]
    assert shapes == [(6, 3, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5), "outputs are log-probabilities"


def test_normalisation_is_inside_the_model():
    torch.manual_seed(0)
    with_norm = SeedCNN(normalize=True)
    without = SeedCNN(normalize=False)
    without.load_state_dict({k: v for k, v in with_norm.state_dict().items() if not k.startswith("normalize.")})
    x = torch.rand(2, 3, 32, 32)
    expected = without((x - with_norm.normalize.mean) / with_norm.normalize.std)
    assert torch.allclose(with_norm(x), expected, atol=1e-5)


def test_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown name 'resnet999'; registered models are \[.*'seed_cnn'"):
        build_model("resnet999")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("seed_cnn")
    path = save_checkpoint(tmp_path / "model.pt", model, {"name": "seed_cnn", "num_classes": 10},
                           metadata={"note": "x"})
    loaded = advlab.load(path)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x))
    assert not loaded.training
    assert read_checkpoint(path)["metadata"] == {"note": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "a temporary file was left behind"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_loading_never_runs_code_from_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "advlab-checkpoint-v1", "payload": _Exploit()}, f)
    with pytest.raises(ValueError, match="not a readable checkpoint: torch.load.weights_only=True. refused it .it "
                                         "holds objects other than tensors"):
        advlab.load(path)


def test_foreign_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds a dict with keys 'state_dict' .0 of its 1 values are tensors.; "
                                         "advlab reads advlab's model.pt, a state_dict"):
        advlab.load(tmp_path / "other.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not an advlab checkpoint"):
        read_checkpoint(tmp_path / "weights.pt")
    with pytest.raises(FileNotFoundError, match="no file at"):
        advlab.load(tmp_path / "missing.pt")


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_text(target, 123)  # fails while writing
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_writes_get_the_permissions_a_plain_open_would_give(tmp_path):
    """mkstemp makes its file owner-only; a result written atomically is as readable as one written with open()."""
    write_text(tmp_path / "results.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("results.json") == mode("plain.json")


def test_non_finite_numbers_are_written_as_null(tmp_path):
    """A diverged run's inf or nan loss must not stop it from writing its results (JSON has neither)."""
    import json

    from advlab.io import write_json
    write_json(tmp_path / "r.json", {"loss": float("inf"), "val": [1.0, float("nan")], "ok": 0.5})
    assert json.loads((tmp_path / "r.json").read_text()) == {"loss": None, "val": [1.0, None], "ok": 0.5}
