"""The seed study's adversarial-training loss: l'(x, y) = alpha * l(x, y) + (1 - alpha) * l(p(x), y).

alpha = 1 is clean training, alpha = 0 trains on perturbed images only (the study's
choice). Only the terms with non-zero weight are computed, so alpha = 0 costs one
forward pass, not two.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight of the clean loss) must be in [0, 1], got {alpha}")
    return alpha


def mixed_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor, alpha: float):
    """Return (loss, outputs): outputs maps "clean"/"adv" to the model output of each term computed."""
    outputs = {}
    loss = x.new_zeros(())
    if alpha > 0 or x_adv is None:
        outputs["clean"] = model(x)
        loss = loss + (alpha if x_adv is not None else 1.0) * F.cross_entropy(outputs["clean"], y)
    if x_adv is not None and alpha < 1:
        outputs["adv"] = model(x_adv)
        loss = loss + (1 - alpha) * F.cross_entropy(outputs["adv"], y)
    return loss, outputs
