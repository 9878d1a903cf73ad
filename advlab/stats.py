"""Accuracies with their uncertainty: every rate advlab reports carries a Wilson 95% interval.

On 1000 test images a 95% interval is about +-3 points at 60% accuracy; the
Wilson interval stays inside [0, 1] and behaves at 0% and 100%, where the normal
approximation collapses to a width of zero.
"""

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n the bound is exactly 0 (or 1); computing it leaves rounding dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class Rate:
    """successes out of n, e.g. images still classified correctly under attack."""

    successes: int
    n: int

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def to_dict(self) -> dict:
        low, high = self.ci95
        return {"value": self.value, "successes": self.successes, "n": self.n, "ci95": [low, high]}

    @classmethod
    def from_dict(cls, d: dict) -> "Rate":
        return cls(int(d["successes"]), int(d["n"]))

    def __str__(self) -> str:
        """'62.8% [59.8, 65.7]' : percent with its 95% interval."""
        low, high = self.ci95
        return f"{100 * self.value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def format_rate(rate: "Rate | dict") -> str:
    """'62.8% [59.8, 65.7]' from a Rate or its to_dict() form (as stored in results JSON)."""
    return str(rate if isinstance(rate, Rate) else Rate.from_dict(rate))
