"""advlab: adversarial robustness experiments for image classifiers."""

__version__ = "0.1.0"

from advlab import resolvers  # noqa: E402,F401 - the configs' ${div:...} and ${advlab:...}, before any config is read
from advlab.checkpoint import load  # noqa: E402


def evaluate(*args, **kwargs):
    """advlab.evaluation.api.evaluate: robust accuracy of any nn.Module (imported on first use)."""
    from advlab.evaluation.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["__version__", "load", "evaluate"]
