"""The basic classifier of the seed study ("An Adversarial Approach to Image Classification").

Two conv/pool stages and three linear layers ending in log-softmax, as in the study.
The study is silent about normalisation; here it is a layer at the front (CIFAR-10
statistics by default), so inputs stay images in [0, 1].
"""

import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize


class SeedCNN(nn.Module):
    def __init__(self, num_classes: int = 10, normalize: bool = True):
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)
