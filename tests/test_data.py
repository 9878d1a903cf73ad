import numpy as np
import pytest
import torch

from advlab.data import CIFAR10DataModule, DataError, class_index, load_split, resolve_root


def test_datamodule_on_the_real_archives(cifar_root):
    dm = CIFAR10DataModule(root=str(cifar_root), val_size=5000, batch_size=32)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 45000 and len(dm.val_set) == 5000 and len(dm.test_set) == 1000
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 3, 32, 32)
    xf, yf = dm.on_after_batch_transfer((x, y), 0)
    assert xf.dtype == torch.float32 and 0 <= xf.min() and xf.max() <= 1
    # Train and validation images are disjoint: no validation image is also a training image.
    train_keys = {img.numpy().tobytes() for img in dm.train_set.tensors[0][:45000:9]}
    assert not any(img.numpy().tobytes() in train_keys for img in dm.val_set.tensors[0])
    # The archives' published facts (SOURCE.md): first labels and class counts.
    xt, yt = dm.test_set.tensors
    assert yt[:4].tolist() == [3, 8, 8, 0]
    xtr, ytr = load_split(cifar_root, "train")
    assert ytr[:5].tolist() == [6, 9, 9, 4, 1]
    assert torch.bincount(ytr).tolist() == [5000] * 10


def test_the_split_does_not_move_with_the_run_seed(cifar_root):
    a = CIFAR10DataModule(root=str(cifar_root), max_train_images=100)
    b = CIFAR10DataModule(root=str(cifar_root), max_train_images=100)
    torch.manual_seed(123)
    a.setup("fit")
    torch.manual_seed(456)
    b.setup("fit")
    assert torch.equal(a.val_set.tensors[1], b.val_set.tensors[1])
    assert len(a.train_set) == 100


def test_root_defaults_to_the_environment_then_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path.resolve()
    monkeypatch.delenv("ADVLAB_DATA")
    assert resolve_root(None).name == "data"
    assert resolve_root(str(tmp_path / "x")) == (tmp_path / "x").resolve()


def test_missing_data_says_where_to_put_which_files(tmp_path):
    with pytest.raises(DataError, match=r"train_1.npz \.\.\. train_5.npz and test.npz") as err:
        load_split(tmp_path, "test", source="npz")
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_split(tmp_path, "test", source="torchvision", download=False)


def _write(path, **arrays):
    np.savez(path, **arrays)


def test_small_archives_load(tmp_path):
    rng = np.random.default_rng(0)
    for i in (1, 2, 10):  # numeric order, not text order: 1, 2, 10
        _write(tmp_path / f"train_{i}.npz", x=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
               y=np.full(4, i % 10, dtype=np.uint8))
    x, y = load_split(tmp_path, "train")
    assert x.shape == (12, 3, 32, 32) and y.dtype == torch.int64
    assert y.tolist() == [1] * 4 + [2] * 4 + [0] * 4


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.full((2, 32, 32, 3), 2.0, np.float32), "y": np.zeros(2, np.uint8)}, r"must lie in \[0, 1\]"),
        ({"x": np.zeros((2, 32, 32), np.uint8), "y": np.zeros(2, np.uint8)}, "must be uint8 of shape"),
        ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.zeros(3, np.uint8)}, "must hold 2 integer labels"),
        ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.array([0, 10])}, r"labels must be in \[0, 9\]"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8)}, "expected arrays 'x' and 'y'"),
        ({"x": np.array([object()] * 2, dtype=object), "y": np.zeros(2, np.uint8)}, "not a readable"),
    ],
)
def test_bad_archives_are_refused_with_the_file_named(tmp_path, arrays, match):
    _write(tmp_path / "test.npz", **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_split(tmp_path, "test")
    assert "test.npz" in str(err.value)


def test_corrupt_archive(tmp_path):
    (tmp_path / "test.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="test.npz: not a readable NumPy"):
        load_split(tmp_path, "test")


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "hdf5"}, r"data.source must be one of"),
    ({"batch_size": 0}, r"data.batch_size must be >= 1"),
    ({"val_size": -1}, r"data.val_size must be >= 0"),
])
def test_bad_datamodule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFAR10DataModule(**kwargs)


def test_class_names_and_indices():
    assert class_index("deer") == 4 and class_index(4) == 4 and class_index("4") == 4
    with pytest.raises(ValueError, match="unknown name 'moose'"):
        class_index("moose")
    with pytest.raises(ValueError, match=r"must be in \[0, 9\]"):
        class_index(12)
