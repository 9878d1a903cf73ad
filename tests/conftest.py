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
    x, y = load_split(cifar_root, "train")
    x, y = x[:10000], y[:10000]
    model = build_model("seed_cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
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
