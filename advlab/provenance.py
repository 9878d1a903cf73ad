"""What a result needs to be reproduced: the model file's hash, package versions, the code's commit."""

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("advlab", "torch", "torchvision", "pytorch-lightning", "hydra-core", "torchmetrics", "numpy")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The commit of the advlab checkout in use, with '+dirty' for uncommitted changes; None outside git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance(checkpoint: str | Path | None) -> dict:
    return {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "versions": package_versions(),
        "commit": git_commit(),
    }
