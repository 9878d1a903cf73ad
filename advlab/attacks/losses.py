"""Per-image attack objectives. Every one is maximised by the attacker.

Each takes the model output (logits or log-probabilities: all three depend only
on differences between classes, or go through log-softmax, so both give the same
value) and returns one value per image. With `target`, the objective rewards
moving toward the target class instead of away from the true one.
"""

import torch
import torch.nn.functional as F


def cross_entropy(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(out, y, reduction="none")
    return -F.cross_entropy(out, target, reduction="none")


def _best_other(out: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest output among the classes other than `cls`."""
    masked = out.clone()
    masked.scatter_(1, cls[:, None], float("-inf"))
    return masked.max(1).values


def margin(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini-Wagner margin: best other class minus the true class (positive = misclassified).
    Targeted: target minus the best other class (positive = classified as the target)."""
    if target is None:
        return _best_other(out, y) - out.gather(1, y[:, None]).squeeze(1)
    return out.gather(1, target[:, None]).squeeze(1) - _best_other(out, target)


def dlr(out: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): the margin scaled by the spread of the
    top logits, so it does not change when the logits are rescaled (defeats that form of masking).
    Untargeted: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3). Targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).
    So it needs at least 3 classes (targeted: 4)."""
    needed = 3 if target is None else 4
    if out.shape[1] < needed:
        raise ValueError(f"the {'targeted ' if target is not None else ''}DLR loss needs a model with at least "
                         f"{needed} classes, this one has {out.shape[1]} (attacks on DLR: apgd-dlr, apgd-t, autoattack, "
                         "autoattack-fast; use e.g. apgd-ce, pgd, fab, square)")
    top = out.sort(1, descending=True).values
    z_y = out.gather(1, y[:, None]).squeeze(1)
    if target is None:
        return -(z_y - _best_other(out, y)) / (top[:, 0] - top[:, 2] + 1e-12)
    z_t = out.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
