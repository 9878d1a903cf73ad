"""advlab: adversarial robustness experiments for image classifiers."""

__version__ = "0.1.0"

from advlab.checkpoint import load  # noqa: E402

__all__ = ["__version__", "load"]
