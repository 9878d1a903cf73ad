"""Datasets chosen by config (data=cifar10|cifar100|svhn|npz): metadata, the npz forms, any class count and
image size, through the datamodule, the models and smoke-size runs. Synthetic archives in tmp_path stand
in for CIFAR-100, SVHN and other arrays (they cannot be downloaded here)."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from advlab.build import evaluation_settings
from advlab.checkpoint import read_checkpoint
from advlab.cli import run
from advlab.data import (
    CLASS_NAMES,
    DATASETS,
    DataError,
    ImageDataModule,
    channel_stats,
    class_index,
    load_split,
    read_npz,
)
from advlab.models import build_model
from helpers import SMOKE, config


def write_npz(path, n, classes, size=(32, 32), seed=0, channels_first=False, labels=None):
    """n random uint8 images of `size` with labels cycling over `classes` (or the given labels)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    y = np.arange(n) % classes if labels is None else np.asarray(labels)
    np.savez(path, x=x.transpose(0, 3, 1, 2) if channels_first else x, y=y.astype(np.int64))
    return path


def plain(node):
    return OmegaConf.to_container(node, resolve=True)


# -- metadata and configs ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100), ("svhn", 10)])
def test_each_data_config_repeats_its_datasets_metadata_and_the_model_reads_it(name, classes):
    cfg = config(f"data={name}")
    info = DATASETS[name]
    assert cfg.data.dataset == name and cfg.data.num_classes == info.num_classes == classes
    assert tuple(cfg.data.image_size) == info.image_size
    assert tuple(cfg.data.mean) == info.mean and tuple(cfg.data.std) == info.std
    assert tuple(cfg.data.class_names) == info.class_names and len(info.class_names) == classes
    model_cfg = plain(cfg.model)
    assert model_cfg["num_classes"] == classes and model_cfg["normalization"]["mean"] == list(info.mean)
    model = build_model(**model_cfg)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, classes)
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(info.std))


def test_cifar10_is_unchanged_by_default():
    cfg = config()
    assert cfg.data.dataset == "cifar10" and tuple(cfg.data.class_names) == CLASS_NAMES
    # the seed CNN on 32x32 images is the study's network: fc1 takes 16 x 5 x 5 features
    assert build_model(**plain(cfg.model)).fc1.in_features == 400


@pytest.mark.parametrize("model", ["seed_cnn", "preact_resnet18", "wide_resnet", "lipschitz_cnn", "purified"])
def test_every_model_config_follows_the_data_to_100_classes_and_64x64(model, tmp_path):
    test = write_npz(tmp_path / "test.npz", 4, 100, size=(64, 64))
    slim = {"preact_resnet18": ["model.width=4"], "wide_resnet": ["model.depth=10", "model.widen_factor=1"],
            "purified": ["model.width=4", "model.latent_dim=8"]}.get(model, [])
    cfg = config(f"model={model}", "data=npz", f"data.test={test}", "data.num_classes=100",
                 "data.image_size=[64,64]", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", *slim)
    net = build_model(**plain(cfg.model)).eval()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 100)


def test_models_refuse_sizes_they_cannot_take():
    with pytest.raises(ValueError, match="image_size must be"):
        build_model("lipschitz_cnn", image_size=[60, 60])  # three pixel-unshuffles need multiples of 8
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("seed_cnn", image_size=[12, 12])
    with pytest.raises(ValueError, match=r"x must be 64x64 images"):
        build_model("lipschitz_cnn", image_size=[64, 64])(torch.rand(1, 3, 32, 32))


def test_class_names_per_dataset():
    assert class_index("worm", DATASETS["cifar100"].class_names) == 99
    assert class_index("7", DATASETS["svhn"].class_names) == 7 and class_index(7, DATASETS["svhn"].class_names) == 7
    with pytest.raises(ValueError, match=r"must be in \[0, 99\]"):
        class_index(100, DATASETS["cifar100"].class_names)
    with pytest.raises(ValueError, match="class names are not known"):
        class_index("deer", None, 10)
    assert class_index("42", None, 100) == 42
    assert evaluation_settings(config("data=cifar100", "evaluation.target=worm")).target == 99
    assert evaluation_settings(config("evaluation.target=deer")).target == 4


# -- the named datasets' offline form ------------------------------------------------------------

@pytest.mark.parametrize("name, classes", [("cifar100", 100), ("svhn", 10)])
def test_named_dataset_reads_its_npz_archives_and_refuses_labels_beyond_its_classes(tmp_path, name, classes):
    write_npz(tmp_path / "train_1.npz", 100, classes)
    write_npz(tmp_path / "train_2.npz", 40, classes, seed=1)
    write_npz(tmp_path / "test.npz", 30, classes, seed=2)
    dm = ImageDataModule(name, root=str(tmp_path), val_size=20, batch_size=16)
    dm.setup()
    assert len(dm.train_set) == 120 and len(dm.val_set) == 20 and len(dm.test_set) == 30
    assert dm.info.num_classes == classes and dm.info.hflip == (name != "svhn")
    assert int(torch.cat([dm.train_set.tensors[1], dm.val_set.tensors[1]]).max()) == classes - 1
    write_npz(tmp_path / "test.npz", 3, classes + 1, labels=[0, 1, classes])
    with pytest.raises(DataError, match=rf"test.npz: labels must be in \[0, {classes - 1}\]"):
        load_split(tmp_path, "test", dataset=name)


def test_named_dataset_refuses_other_sizes_and_other_counts(tmp_path):
    write_npz(tmp_path / "test.npz", 4, 10, size=(64, 64))
    dm = ImageDataModule("cifar100", root=str(tmp_path))
    with pytest.raises(DataError, match=r"cifar100 images are \(32, 32\), the test split holds 64x64"):
        dm.setup("test")
    with pytest.raises(ValueError, match="data.num_classes: cifar100 has 100, got 10"):
        ImageDataModule("cifar100", root=str(tmp_path), num_classes=10)
    with pytest.raises(ValueError, match="data.train and data.test name the files of data=npz"):
        ImageDataModule("svhn", test=str(tmp_path / "test.npz"))


def test_each_dataset_has_its_own_root_and_missing_data_names_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "c10"))
    monkeypatch.setenv("ADVLAB_CIFAR100", str(tmp_path / "c100"))
    monkeypatch.delenv("ADVLAB_SVHN", raising=False)
    assert ImageDataModule("cifar10").root == (tmp_path / "c10").resolve()
    assert ImageDataModule("cifar100").root == (tmp_path / "c100").resolve()
    assert ImageDataModule("svhn").root.parts[-2:] == ("data", "svhn")
    with pytest.raises(DataError, match="cifar-100-python") as err:
        load_split(tmp_path, "test", source="torchvision", download=False, dataset="cifar100")
    assert "labels 0-99" in str(err.value) and "ADVLAB_CIFAR100" in str(err.value)
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_split(tmp_path, "test", source="torchvision", download=False, dataset="svhn")


# -- data=npz: any arrays ----------------------------------------------------------------------------

def test_npz_of_100_classes_and_64x64_images_through_the_datamodule(tmp_path):
    train = write_npz(tmp_path / "train.npz", 250, 100, size=(64, 64))
    test = write_npz(tmp_path / "test.npz", 50, 100, size=(64, 64), seed=1, channels_first=True)
    dm = ImageDataModule("npz", train=str(train), test=[str(test)], val_size=0.2, batch_size=32)
    dm.setup()
    info = dm.info
    assert info.num_classes == 100 and info.image_size == (64, 64)
    assert info.class_names == tuple(str(i) for i in range(100))
    x_all = torch.from_numpy(read_npz(train)[0]).permute(0, 3, 1, 2)
    assert info.mean == pytest.approx(channel_stats(x_all)[0]) and info.mean == pytest.approx((0.5,) * 3, abs=0.01)
    assert len(dm.train_set) == 200 and len(dm.val_set) == 50 and len(dm.test_set) == 50
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 3, 64, 64)
    # channels-first archives give the same images as channels-last ones
    xt = np.load(test)["x"]
    assert torch.equal(dm.test_set.tensors[0], torch.from_numpy(xt))


def test_npz_metadata_from_the_config_wins(tmp_path):
    test = write_npz(tmp_path / "t.npz", 8, 3)  # labels 0-2 only
    dm = ImageDataModule("npz", test=str(test), num_classes=5, class_names=list("abcde"), mean=[0.1, 0.2, 0.3],
                         std=[1, 1, 1])
    dm.setup("test")
    assert dm.info.num_classes == 5 and dm.info.class_names == tuple("abcde") and dm.info.mean == (0.1, 0.2, 0.3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, r"data=npz needs data.test=PATH.npz"),
    ({"test": "missing.npz"}, DataError, r"missing.npz: no such file"),
    ({"test": "t.npz", "image_size": [64, 64]}, DataError, r"data.image_size is \[64, 64\] but the archives hold 32x32"),
    ({"test": "t.npz", "num_classes": 2}, DataError, r"t.npz: labels must be in \[0, 1\], got \[0, 3\]"),
    ({"test": "t.npz", "train": "big.npz"}, DataError, r"different sizes"),
    ({"test": "t.npz", "class_names": ["a"], "num_classes": 4}, ValueError, r"must name 4 classes"),
    ({"test": "t.npz", "val_size": 1.5}, ValueError, r"data.val_size must be >= 0"),
    ({"test": "t.npz", "mean": [0.5, 0.5]}, ValueError, r"data.mean must have one value per channel"),
])
def test_npz_mistakes_are_refused_naming_the_key_or_file(tmp_path, monkeypatch, kwargs, error, match):
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "t.npz", 8, 4)
    write_npz(tmp_path / "big.npz", 8, 4, size=(48, 48))
    with pytest.raises(error, match=match):
        dm = ImageDataModule("npz", **kwargs)
        dm.setup(None if "train" in kwargs else "test")


def test_npz_without_a_training_set_says_how_to_use_it(tmp_path):
    dm = ImageDataModule("npz", test=str(write_npz(tmp_path / "t.npz", 8, 4)))
    with pytest.raises(DataError, match="data=npz has no training set"):
        dm.setup("fit")


def test_npz_refuses_what_it_cannot_read(tmp_path):
    np.savez(tmp_path / "gray.npz", x=np.zeros((2, 32, 32), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"gray.npz: 'x' must be uint8 of shape \(N, H, W, 3\) or \(N, 3, H, W\)"):
        read_npz(tmp_path / "gray.npz")
    # float images are read (saved adversarial examples are float32), in [0, 1] only
    np.savez(tmp_path / "float.npz", x=np.full((2, 32, 32, 3), 255.0, np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"float.npz: float images must lie in \[0, 1\]"):
        read_npz(tmp_path / "float.npz")
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, -1]))
    with pytest.raises(DataError, match="neg.npz: labels must be in >= 0"):
        read_npz(tmp_path / "neg.npz")


def test_svhn_augmentation_never_flips(tmp_path):
    from advlab.augment import random_crop_flip

    x = torch.rand(64, 3, 8, 8)
    kept = random_crop_flip(x, padding=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept, x)
    assert not torch.equal(random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0)), x)


# -- smoke-size runs ---------------------------------------------------------------------------------

def smoke(*overrides, tmp):
    """A smoke-size run's config (+debug=smoke), FGSM and PGD at one eps, its folder `tmp`."""
    return config("+experiment=baseline", *SMOKE, "logger=none", "evaluation.eps=[0.0,0.01]",
                  "evaluation.attacks=[fgsm,pgd]", "evaluation.checks.n_images=16", f"+output_dir={tmp}", *overrides)


@pytest.mark.slow  # trains and evaluates twice at 64x64
def test_a_run_trains_and_evaluates_on_npz_arrays_of_100_classes_and_64x64(tmp_path):
    train = write_npz(tmp_path / "train.npz", 300, 100, size=(64, 64))
    test = write_npz(tmp_path / "test.npz", 64, 100, size=(64, 64), seed=1)
    out = tmp_path / "run"
    results = run(smoke("data=npz", f"data.train={train}", f"data.test={test}", "evaluation.target=99",
                        tmp=out))
    assert results.n_images == 64 and len(results.confusion) == 100
    assert {c.name for c in results.checks} >= {"large_eps"}  # the checks ran, chance level = 1%
    saved = json.loads((out / "results.json").read_text())
    data = saved["config"]["data"]
    assert data["num_classes"] == 100 and data["image_size"] == [64, 64] and len(data["class_names"]) == 100
    assert saved["config"]["model"]["image_size"] == [64, 64] and saved["targeted"]["target"] == 99
    model_args = read_checkpoint(out / "model.pt")["model"]
    assert model_args["num_classes"] == 100 and model_args["normalization"]["mean"] == data["mean"]
    assert (out / "confusion_matrix.png").stat().st_size > 0
    # and its model.pt through +experiment=evaluate on the same CIFAR-100-shaped arrays, to a report
    again = tmp_path / "evaluate"
    evaluated = run(config("+experiment=evaluate", *SMOKE, "logger=none", "data=npz", f"data.test={test}",
                           f"checkpoint={out / 'model.pt'}", "attack={name:square,queries:20}", "evaluation.eps=[0.0,0.01]",
                           "evaluation.checks.enabled=false",
                           f"+output_dir={again}"))
    assert evaluated.clean == results.clean and len(evaluated.confusion) == 100
    assert "<h1>" in (again / "report.html").read_text()


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
    """model.pt of a smoke run on synthetic CIFAR-10-form archives (data=cifar10 from data.root)."""
    tmp = tmp_path_factory.mktemp("source")
    root = tmp / "data"
    root.mkdir()
    write_npz(root / "train_1.npz", 300, 10)
    write_npz(root / "test.npz", 64, 10, seed=1)
    run(smoke(f"data.root={root}", "data.val_size=50", "evaluation.checks.enabled=false", tmp=tmp / "train"))
    return tmp / "train" / "model.pt"


def test_a_checkpoint_is_evaluated_on_npz_arrays_from_another_source(synthetic_checkpoint, tmp_path):
    """An npz test set that holds only some classes: the model's 10 classes and names come from its
    checkpoint, not from the labels."""
    shifted = write_npz(tmp_path / "shifted.npz", 40, 10, seed=2, labels=np.arange(40) % 4)  # classes 0-3 only
    out = tmp_path / "eval"
    results = run(smoke("data=npz", f"data.test={shifted}", f"checkpoint={synthetic_checkpoint}",
                        "evaluation.target=deer", tmp=out))
    assert results.n_images == 40 and len(results.confusion) == 10
    data = json.loads((out / "results.json").read_text())["config"]["data"]
    assert data["num_classes"] == 10 and data["class_names"] == list(CLASS_NAMES)
    assert results.targeted.target_name == "deer"


def test_a_model_of_other_classes_is_refused_before_evaluation(synthetic_checkpoint, tmp_path):
    test = write_npz(tmp_path / "t.npz", 16, 100)
    with pytest.raises(ValueError, match="data.num_classes is 100 but the model has 10 outputs"):
        run(smoke("data=npz", f"data.test={test}", "data.num_classes=100", f"checkpoint={synthetic_checkpoint}",
                  tmp=tmp_path / "eval"))


def test_a_cifar10_model_evaluated_on_the_same_images_as_npz_scores_the_same(cifar_root, tmp_path):
    """Train on real CIFAR-10 (smoke size), evaluate the checkpoint with data=npz on an archive of the same
    64 test images (stored channels first): the same numbers."""
    fast = ("evaluation.checks.enabled=false",)
    trained = run(smoke(f"data.root={cifar_root}", *fast, tmp=tmp_path / "train"))
    x, y = load_split(cifar_root, "test")
    np.savez(tmp_path / "cifar10_first64.npz", x=x[:64].numpy(), y=y[:64].numpy())
    again = run(smoke("data=npz", f"data.test={tmp_path / 'cifar10_first64.npz'}", *fast,
                      f"checkpoint={tmp_path / 'train' / 'model.pt'}", tmp=tmp_path / "eval"))
    assert again.clean == trained.clean and again.robustness == trained.robustness


def test_the_evaluation_functions_take_the_class_count_from_the_model():
    from torch.utils.data import DataLoader, TensorDataset

    from advlab.evaluation.checks import check_large_eps
    from advlab.evaluation.robustness import evaluate_robustness
    from helpers import TinyNet

    torch.manual_seed(0)
    model = TinyNet(num_classes=100).train()
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 99, 5, 50, 7, 98])
    state = torch.get_rng_state()
    loader = DataLoader(TensorDataset(x, y), batch_size=3, generator=torch.Generator())  # no draw from the global stream
    results = evaluate_robustness(model, loader, [0.0], {})
    assert len(results.confusion) == 100 and results.n_images == 6
    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert check_large_eps(model, x, y, "linf", 0.5).numbers["chance"] == 1.0
