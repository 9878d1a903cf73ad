"""The speedrun's network: the most robust accuracy per CPU-second we measured (docs/speedrun.md).

The layout of airbench's network (Jordan 2024), without its whitening layer: a 3x3 stem, then three
blocks of

    conv 3x3 -> max-pool 2 -> batch norm -> activation -> conv 3x3 -> batch norm -> activation

at `widths` channels (32x32 images: 16x16, 8x8, 4x4 after each block's pool), a global max pool and a
linear layer. Pooling right after each block's first conv puts the second conv on a quarter of the
pixels, which is why it trains several times faster than a VGG of the same widths that pools at the end
of each block; batch norm after every conv lets one-cycle training run at a high learning rate.
Convolutions have no bias (batch norm follows each). It returns logits. The normalisation layer uses
CIFAR-10's statistics unless `mean`, `std` are given; global pooling takes any image size.
"""

import torch
from torch import nn

from advlab.models.normalize import normalization

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _conv_bn(c_in: int, c_out: int, activation, pool: bool = False) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    return layers + ([nn.MaxPool2d(2)] if pool else []) + [nn.BatchNorm2d(c_out), activation()]


class SpeedrunCNN(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(32, 64, 128), activation: str = "relu",
                 normalize: bool = True, mean=None, std=None):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 3 or min(widths) < 2:
            raise ValueError(f"widths must be three channel counts >= 2 (one per block), got {list(widths)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        act = ACTIVATIONS[activation]
        self.normalize = normalization(mean, std) if normalize else nn.Identity()
        layers, c = _conv_bn(3, widths[0] // 2, act), widths[0] // 2
        for w in widths:
            layers += _conv_bn(c, w, act, pool=True) + _conv_bn(w, w, act)
            c = w
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(c, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(self.normalize(x))
        return self.linear(torch.amax(features, dim=(2, 3)))
