"""Watching an attack converge: its loss and the logit margin at every iteration, and one image's path.

For PGD and APGD-CE on a sample of correctly classified images, per iteration: the attack's
objective (cross-entropy) and the margin (true logit minus the best other one; below 0 the image
is misclassified), summarised by the median and quartiles over the images, with a few single
images kept. A median margin still falling over the last fifth of the iterations says the attack
had not converged: more steps would lower the robust accuracy (`still_falling`; the convergence
check reports it).

The path: one image's perturbation delta_t at every PGD iterate, projected on two directions of
the input space (d1 along the final perturbation, d2 along the first step, made orthogonal to d1),
with the boundary of the eps-ball's cross-section in that plane (a circle in L2, a polygon in L-inf:
radius eps / ||cos(t) d1 + sin(t) d2||_inf in direction t).
"""

import math

import torch
from torch import nn

from advlab.attacks import _core
from advlab.attacks.apgd import apgd
from advlab.attacks.losses import cross_entropy, margin
from advlab.attacks.pgd import ascend

SINGLES = 5  # single images drawn thin
TAIL = 0.2  # the fraction of the last iterations that must no longer lower the median margin
TOLERANCE = 0.02  # how much the median margin may still fall over that tail (logit units)


def _summary(values: torch.Tensor) -> dict:
    """values (steps, n) -> per step: 25%, 50%, 75% quantiles, and the first SINGLES images."""
    q = torch.quantile(values.float(), torch.tensor([0.25, 0.5, 0.75]), dim=1)
    return {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist(),
            "singles": values[:, :SINGLES].t().tolist()}


def _still_falling(median_margin: list[float]) -> bool:
    tail = max(2, math.ceil(TAIL * len(median_margin)))
    return len(median_margin) > tail and median_margin[-tail] - median_margin[-1] > TOLERANCE


class _Recorder:
    """Per-image loss and margin at each iterate; rows are images of the sample (idx maps them)."""

    def __init__(self, y: torch.Tensor, steps: int):
        self.y = y
        # An image's margin stays at its last value once the attack stops working on it (APGD drops
        # fooled images), so a fooled image keeps counting as fooled.
        self.loss = torch.full((steps, len(y)), math.nan)
        self.margin = torch.full((steps, len(y)), math.nan)

    def __call__(self, step: int, idx: torch.Tensor, out: torch.Tensor) -> None:
        y = self.y[idx]
        self.loss[step, idx.cpu()] = cross_entropy(out.float(), y).cpu()
        self.margin[step, idx.cpu()] = -margin(out.float(), y).cpu()

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss, mar = self.loss.clone(), self.margin.clone()
        for t in range(1, len(loss)):
            gap = mar[t].isnan()
            loss[t, gap], mar[t, gap] = loss[t - 1, gap], mar[t - 1, gap]
        return loss, mar


def trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, pgd_steps: int = 30,
          apgd_steps: int = 100, seed: int = 0) -> dict:
    """Convergence traces of PGD (the evaluation's steps, step eps/4, from x) and APGD-CE on x, y
    (images the model classifies correctly), plus the first image's PGD path. Plain JSON values."""
    x, y = x.detach(), y
    out = {"eps": eps, "norm": norm, "n": len(y), "attacks": {}}
    with _core.eval_mode(model):
        pgd_record = _Recorder(y, pgd_steps + 1)
        path = []
        everyone = torch.arange(len(y), device=y.device)

        def observe_pgd(step, x_adv, logits):
            pgd_record(step, everyone, logits)
            path.append((x_adv[0] - x[0]).flatten().cpu())

        final = ascend(model, x, y, x.clone(), eps, pgd_steps, eps / 4, norm, cross_entropy, observe=observe_pgd)
        with torch.no_grad():
            pgd_record(pgd_steps, everyone, model(final))
        path.append((final[0] - x[0]).flatten().cpu())
        out["attacks"]["pgd"] = _attack_summary(*pgd_record.filled())
        out["path"] = _path(torch.stack(path), eps, norm)

        apgd_record = _Recorder(y, apgd_steps + 1)
        apgd(model, x, y, eps, norm=norm, steps=apgd_steps, loss="ce", seed=seed,
             observe=lambda step, idx, logits: apgd_record(step, idx, logits))
        out["attacks"]["apgd-ce"] = _attack_summary(*apgd_record.filled())
    return out


def _attack_summary(loss: torch.Tensor, mar: torch.Tensor) -> dict:
    summary = {"loss": _summary(loss), "margin": _summary(mar), "steps": len(loss) - 1}
    # Judged on the images still robust at the end: a fooled image's margin may fall on without changing
    # anything, a robust image's falling margin is the one more steps could still flip.
    robust = mar[-1] > 0
    summary["robust"] = int(robust.sum())
    summary["still_falling"] = bool(robust.any()) and _still_falling(mar[:, robust].median(1).values.tolist())
    return summary


def _path(deltas: torch.Tensor, eps: float, norm: str) -> dict:
    """The iterates' perturbations in the plane of d1 (final perturbation) and d2 (first step, orthogonal)."""
    d1 = deltas[-1] / deltas[-1].norm().clamp_min(1e-12)
    first = deltas[1] if len(deltas) > 1 else torch.randn_like(d1)
    d2 = first - (first @ d1) * d1
    if d2.norm() < 1e-9:  # the first step already points along the final perturbation
        d2 = torch.randn(d1.shape, generator=torch.Generator().manual_seed(0))
        d2 = d2 - (d2 @ d1) * d1
    d2 = d2 / d2.norm().clamp_min(1e-12)
    angles = torch.linspace(0, 2 * math.pi, 181)
    directions = torch.cos(angles)[:, None] * d1 + torch.sin(angles)[:, None] * d2
    size = directions.abs().amax(1) if norm == "linf" else directions.norm(dim=1)
    radius = eps / size
    return {"u": (deltas @ d1).tolist(), "v": (deltas @ d2).tolist(),
            "boundary_u": (radius * torch.cos(angles)).tolist(), "boundary_v": (radius * torch.sin(angles)).tolist()}
