"""Evaluation: accuracies with 95% intervals under the strongest attacks configured, and
the checks that flag a number too good to be true."""

from advlab.evaluation.robustness import adversarial_examples, evaluate_robustness, predict
from advlab.stats import Rate, format_rate, wilson_interval

__all__ = ["evaluate_robustness", "adversarial_examples", "predict", "Rate", "format_rate", "wilson_interval"]
