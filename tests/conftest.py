import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.data import load_split, to_unit_float
from advlab.models import build_model

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("ADVLAB_DATA") or REPO.parent / "shared" / "data" / "cifar10").resolve()


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The real CIFAR-10 archives. Missing data skips, unless ADVLAB_REQUIRE_DATA=1 (CI), where it fails."""
    root = data_root()
    if not (root / "test.npz").is_file():
        message = f"CIFAR-10 archives not found under {root} (set ADVLAB_DATA)"
        if os.environ.get("ADVLAB_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def test_images(cifar_root):
    x, y = load_split(cifar_root, "test")
    return to_unit_float(x[:500]), y[:500]


@pytest.fixture(scope="session")
def trained_model(cifar_root):
    """The seed CNN after 2 quick epochs on 10k real training images (about 40% test accuracy)."""
    torch.manual_seed(0)
    return _train(build_model("seed_cnn"), cifar_root, epochs=2, weight_decay=0.0)


def _train(model: nn.Module, cifar_root, epochs: int, weight_decay: float) -> nn.Module:
    """Seeded SGD on the first 10k real training images; the caller seeds before building the model."""
    x, y = load_split(cifar_root, "train")
    x, y = x[:10000], y[:10000]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(model(to_unit_float(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


class TinyNet(nn.Module):
    """A small model with batch-norm (so train/eval mode matters) that returns logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def synthetic_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


class SmallResNet(nn.Module):
    """A ResNet-8 (three stages of one basic block, 16-32-64 channels), small enough to train on CPU in tests."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        from advlab.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize

        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(_Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(self.normalize(x))))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


@pytest.fixture(scope="session")
def trained_resnet(cifar_root):
    """SmallResNet after one epoch on 10k real training images (about 40% test accuracy)."""
    torch.manual_seed(0)
    return _train(SmallResNet(), cifar_root, epochs=1, weight_decay=5e-4)
