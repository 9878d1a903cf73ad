"""advlab: adversarial robustness experiments for image classifiers."""

__version__ = "0.1.0"

from advlab import resolvers  # noqa: E402,F401 - the configs' ${div:...} and ${advlab:...}, before any config is read
from advlab.checkpoint import load  # noqa: E402


def evaluate(*args, **kwargs):
    """advlab.evaluation.api.evaluate: robust accuracy of any nn.Module (imported on first use)."""
    from advlab.evaluation.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def load_results(run_dir):
    """The Results of a finished run (its folder, or its results.json), with its per-image record (merges
    included): results.per_image.to_pandas() is the table."""
    from pathlib import Path

    from advlab.results import Results

    path = Path(run_dir)
    return Results.load(path / "results.json" if path.is_dir() else path)


__all__ = ["__version__", "load", "evaluate", "load_results"]
