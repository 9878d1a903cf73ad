"""Fixtures, and the rule that keeps the fast tier fast.

The tiers (docs/development.md): a test is marked `slow` when it starts a subprocess, a browser or DDP, or
trains for more than a few seconds; `make test-fast` runs the others. So that the rule stays applied, every
test of the fast tier that takes more than FAST_SECONDS is listed at the end of the run.
"""

import os
import shutil
import tempfile

import pytest
import torch

from advlab.data import load_split, to_unit_float
from advlab.models import build_model
from helpers import SmallResNet, TinyNet, data_root, train_on_cifar


@pytest.fixture(scope="session")
def cifar_root():
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
    return train_on_cifar(build_model("seed_cnn"), cifar_root, epochs=2, weight_decay=0.0)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def synthetic_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.fixture(scope="session")
def trained_resnet(cifar_root):
    """SmallResNet after one epoch on 10k real training images (about 40% test accuracy)."""
    torch.manual_seed(0)
    return train_on_cifar(SmallResNet(), cifar_root, epochs=1, weight_decay=5e-4)


# Resumable evaluations keep their finished batches under ADVLAB_CACHE: the tests' own folder, not the user's.
# The process that creates it (pytest-xdist's workers inherit it) removes it at the end of the run.
_CACHE = None
if "ADVLAB_CACHE" not in os.environ:
    _CACHE = os.environ["ADVLAB_CACHE"] = tempfile.mkdtemp(prefix="advlab-test-cache-")


def pytest_unconfigure(config):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_configure(config):
    """Under pytest-xdist each worker takes its share of the cores as torch threads (and so do the subprocesses
    it starts), so that the workers together do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


FAST_SECONDS = 10.0
_too_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and "slow" not in report.keywords and report.duration > FAST_SECONDS:
        _too_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _too_slow:
        terminalreporter.write_sep("-", f"fast-tier tests over {FAST_SECONDS:g} s (mark them slow, or make them faster)")
        for nodeid, seconds in sorted(_too_slow, key=lambda t: -t[1]):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")

