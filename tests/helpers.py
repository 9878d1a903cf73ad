"""What several test files share: paths, the command line, the Hydra config, small models.

Imported as `from helpers import ...` (pytest puts tests/ on sys.path: [tool.pytest.ini_options]
pythonpath). Test files import from here, never from each other; fixtures stay in conftest.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["+debug=smoke"]  # the overrides that shrink a run to smoke size (conf/debug/smoke.yaml)


def data_root() -> Path:
    """ADVLAB_DATA, else the shared offline copy next to the repository."""
    return Path(os.environ.get("ADVLAB_DATA") or REPO.parent / "shared" / "data" / "cifar10").resolve()


def advlab_cli(*args, cwd=REPO, env_extra=None) -> subprocess.CompletedProcess:
    """`python -m advlab *args` in a subprocess, as a user types it; W&B offline and silent."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "advlab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def config(*overrides):
    """The composed Hydra config of conf/config.yaml with these overrides (no run directory, no job)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """One norm per image, computed here independently of advlab."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def assert_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    """x_adv is in [0, 1] and within eps of x (float rounding allowed for)."""
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "outside [0, 1]"
    size = perturbation_norms(x_adv - x, norm)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), f"outside the {norm} eps-ball: {size.max().item()} > {eps}"


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


class TinyNet(nn.Module):
    """A small model with batch-norm (so train/eval mode matters) that returns logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.net(x)


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


def train_on_cifar(model: nn.Module, cifar_root, epochs: int, weight_decay: float) -> nn.Module:
    """Seeded SGD on the first 10k real training images; the caller seeds before building the model."""
    from advlab.data import load_split, to_unit_float

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


class PixelNet(nn.Module):
    """Conv, batch-norm (so train/eval mode matters) and a linear layer on every pixel of 16x16 images.

    Unlike the pooled TinyNet (which predicts one class almost whatever the input), its decision
    boundaries lie close to the images, so even short attacks fool every image: what an attack
    must do is visible in a few steps.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 16 * 16, num_classes))

    def forward(self, x):
        return self.net(x)
