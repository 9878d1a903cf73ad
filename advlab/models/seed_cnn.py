"""The basic classifier of the seed study ("An Adversarial Approach to Image Classification").

Two conv/pool stages and three linear layers ending in log-softmax, as in the study.
The study is silent about normalisation; here it is a layer at the front (CIFAR-10
statistics by default; `mean`, `std` for other data), so inputs stay images in [0, 1].
The study's images are 32x32 (fc1 takes 16 x 5 x 5 features); for `image_size` H x W it
takes 16 x ((H - 4) // 2 - 4) // 2 x (the same for W), the same network otherwise.
"""

import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.normalize import image_size as check_image_size
from advlab.models.normalize import normalization


class SeedCNN(nn.Module):
    def __init__(self, num_classes: int = 10, normalize: bool = True, mean=None, std=None, image_size=(32, 32)):
        super().__init__()
        h, w = (((s - 4) // 2 - 4) // 2 for s in check_image_size(image_size))
        if h < 1 or w < 1:
            raise ValueError(f"image_size must be at least 16x16 for seed_cnn's two 5x5 convs and pools, got {image_size}")
        self.normalize = normalization(mean, std) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * h * w, 120)
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
