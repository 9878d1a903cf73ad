"""Model registry: `build_model("seed_cnn")`, or `model=seed_cnn` from Hydra.

Registered: seed_cnn (the seed study's CNN), speedrun_cnn (the CPU speedrun's network), preact_resnet18
(PreActResNet-18) and wide_resnet (WideResNet, WRN-34-10 by default).

Every registered model takes images in [0, 1] and returns logits or
log-probabilities over the classes; normalisation is a layer inside it.
"""

from advlab.models.lipschitz import LipschitzCNN
from advlab.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from advlab.models.preact_resnet import PreActResNet18
from advlab.models.purified import build_purified
from advlab.models.registry import MODELS, build_model, register
from advlab.models.seed_cnn import SeedCNN
from advlab.models.speedrun_cnn import SpeedrunCNN
from advlab.models.wide_resnet import WideResNet


register("seed_cnn", SeedCNN)
register("speedrun_cnn", SpeedrunCNN)  # the robust speedrun's network (docs/speedrun.md)
register("preact_resnet18", PreActResNet18)
register("wide_resnet", WideResNet)
register("lipschitz_cnn", LipschitzCNN)  # 1-Lipschitz in L2: certified robustness from its margins
register("purified", build_purified)  # a classifier behind a VAE purifier (advlab/models/purified.py)

__all__ = ["MODELS", "register", "build_model", "SeedCNN", "SpeedrunCNN", "PreActResNet18", "WideResNet", "Normalize",
           "CIFAR10_MEAN", "CIFAR10_STD"]
