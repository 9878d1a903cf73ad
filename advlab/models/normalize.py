"""Normalisation as a layer, so every model takes images in [0, 1].

Attacks then work in pixel space and epsilon keeps its pixel meaning whatever
statistics a model was trained with.
"""

from collections.abc import Sequence

import torch
from torch import nn

from advlab.data.datasets import DATASETS

# The models' defaults: CIFAR-10's statistics, from its DatasetInfo (advlab.data.datasets); configs pass a
# dataset's own as the model's normalisation (${data.mean}, ${data.std}).
CIFAR10_MEAN = DATASETS["cifar10"].mean
CIFAR10_STD = DATASETS["cifar10"].std


def normalization(mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> "Normalize":
    """Normalize(mean, std), CIFAR-10's statistics where one is None."""
    return Normalize(CIFAR10_MEAN if mean is None else mean, CIFAR10_STD if std is None else std)


def image_size(value, multiple: int = 1) -> tuple[int, int]:
    """(height, width) of `value` (an int for square images, or two ints), each a multiple of `multiple`."""
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < multiple or s % multiple for s in size):
        rule = f" multiples of {multiple}" if multiple > 1 else ""
        raise ValueError(f"image_size must be [height, width] (positive integers{rule}), got {value!r}")
    return int(size[0]), int(size[1])


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are buffers, so they follow .to(device)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], persistent: bool = True):
        """persistent=False: mean and std are not in the state_dict (they come from a config)."""
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive in every channel, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
