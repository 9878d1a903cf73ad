"""WideResNet-depth-k for CIFAR-10 (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

The robustness literature's standard large model: WRN-34-10 (about 46.16M parameters) is
what Madry et al. and TRADES train and RobustBench ranks. A 3x3 stem with 16 channels,
three groups of (depth - 4) / 6 pre-activation blocks with 16k, 32k and 64k channels
(k = widen_factor; strides 1, 2, 2), a final BN-ReLU, global average pooling and a linear
layer. It returns logits. WideResNet(depth=10, widen_factor=1) is a slim copy for tests.
The normalisation layer uses CIFAR-10's statistics unless `mean`, `std` are given; global
pooling takes any image size.
"""

import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.normalize import normalization
from advlab.models.preact_resnet import PreActBlock


class WideResNet(nn.Module):
    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, normalize: bool = True,
                 dropout: float = 0.0, mean=None, std=None):
        super().__init__()
        # The paper's convention: n blocks of 2 convs in each of 3 groups, plus 4 layers, so depth = 6n + 4.
        if int(depth) != depth or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth}")
        if int(widen_factor) != widen_factor or widen_factor < 1:
            raise ValueError(f"widen_factor must be an integer >= 1, got {widen_factor}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks_per_group = (int(depth) - 4) // 6
        self.normalize = normalization(mean, std) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, padding=1, bias=False)
        blocks, in_channels = [], 16
        for multiple, stride in ((16, 1), (32, 2), (64, 2)):
            out_channels = multiple * int(widen_factor)
            for i in range(blocks_per_group):
                blocks.append(PreActBlock(in_channels, out_channels, stride if i == 0 else 1, dropout))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_channels)
        self.linear = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self):
        # The paper's initialisation (He et al. normal, fan-out), which TRADES-style training assumes.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
