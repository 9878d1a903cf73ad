"""Normalisation as a layer, so every model takes images in [0, 1].

Attacks then work in pixel space and epsilon keeps its pixel meaning whatever
statistics a model was trained with.
"""

from collections.abc import Sequence

import torch
from torch import nn

# Per-channel statistics of the CIFAR-10 training set on the [0, 1] scale.
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are buffers, so they follow .to(device)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive in every channel, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
