"""An attack as a user writes it in their own module, outside advlab (used by test_cli)."""

import torch


class ShiftAttack:
    """Moves every pixel by strength * eps against the sign of the gradient-free guess (brighter images),
    inside the L-inf ball and [0, 1]. Records where it was called from (training or evaluation)."""

    calls: list[str] = []
    targeted = False
    iterative = False

    def __init__(self, strength: float = 1.0, norm: str = "linf"):
        self.strength, self.norm = strength, norm

    def __call__(self, model, x, y, eps, target=None):
        ShiftAttack.calls.append("train" if torch.is_grad_enabled() and model.training else "eval")
        return (x + self.strength * eps).clamp(0, 1)

    def __repr__(self) -> str:
        return f"ShiftAttack(strength={self.strength})"
