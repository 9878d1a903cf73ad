"""Evaluation: accuracies with 95% intervals, under the strongest attacks configured."""

from advlab.evaluation.robustness import adversarial_examples, evaluate_robustness, make_attacks, predict
from advlab.evaluation.stats import Rate, format_rate, wilson_interval

__all__ = ["evaluate_robustness", "adversarial_examples", "make_attacks", "predict", "Rate", "format_rate",
           "wilson_interval"]
