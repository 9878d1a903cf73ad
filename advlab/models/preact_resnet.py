"""PreActResNet-18 for CIFAR-10 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The layout Wong et al. (2020, "Fast is better than free") train adversarially on CIFAR-10:
a 3x3 stem, four stages of two pre-activation blocks (width, 2, 4, 8 x width channels;
64-128-256-512 by default, about 11.17M parameters), a final batch-norm + ReLU, global
average pooling and a linear layer. It returns logits. `width` shrinks every stage at
once, so tests and CPU runs can use a slim copy of the same architecture. The normalisation
layer uses CIFAR-10's statistics unless `mean`, `std` are given; global pooling takes any image size.
"""

import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.normalize import normalization


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; the skip path starts after the first BN-ReLU when it must change shape.

    Also the block of WideResNet, which adds dropout between the two convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection sees the activated input (as in He et al.); an identity skip keeps x untouched.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class PreActResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, normalize: bool = True, width: int = 64, mean=None, std=None):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        width = int(width)
        self.normalize = normalization(mean, std) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(3, width, 3, 1, padding=1, bias=False)
        stages, in_channels = [], width
        for multiple, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out_channels = width * multiple
            stages += [PreActBlock(in_channels, out_channels, stride), PreActBlock(out_channels, out_channels, 1)]
            in_channels = out_channels
        self.layers = nn.Sequential(*stages)
        # Pre-activation blocks end on a conv, so the features need one last BN-ReLU before pooling.
        self.bn = nn.BatchNorm2d(in_channels)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        # Global pooling equals Wong et al.'s 4x4 average pool on 32x32 inputs and accepts other sizes.
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
