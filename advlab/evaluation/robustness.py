"""Clean accuracy, accuracy under attack and targeted success, in one pass over a test set.

Discipline (after AutoAttack):
- an image counts as robust only if it is classified correctly clean and under
  every attack at that eps: the per-image worst case is the headline number;
- attacks run only on images that are still classified correctly (and, for the
  worst case, still robust at the previous eps), which changes no number and
  saves the work on images already lost;
- targeted success is counted over images whose true class is not the target.
"""

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from advlab.attacks import fgsm
from advlab.attacks.registry import TARGETABLE
from advlab.attacks._core import check_eps, eval_mode
from advlab.data import to_unit_float
from advlab.evaluation.stats import Rate

# (model, x, y, eps, target=None) -> adversarial x
Attack = Callable[..., torch.Tensor]


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def _batches(loader: Iterable, device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in loader:
        yield to_unit_float(x.to(device)), y.to(device)


def evaluate_robustness(
    model: nn.Module,
    loader: Iterable,
    eps: Sequence[float],
    attacks: dict[str, Attack],
    target: int | None = None,
    num_classes: int = 10,
    per_attack: bool = True,
    norm: str = "linf",
) -> dict:
    """Everything the reports need, as plain numbers (JSON-ready).

    Returns n_images, clean (a Rate dict), confusion_matrix (counts and row
    percentages), robustness ({"eps": [...], "accuracy": {attack or "worst_case":
    one Rate per eps}}), perturbed (L-inf only: FGSM applied to every image, the seed
    study's "perturbed accuracy", which can exceed clean accuracy under label
    leaking) and, when target is given, targeted ({"target", "eps", "success":
    {attack: one Rate per eps}} for the attacks that take a target).

    The worst case is computed with eps in increasing order: an image fooled at a
    smaller eps is fooled at every larger one (the smaller ball lies inside the
    larger), so only images robust so far are attacked. per_attack=True also runs
    every attack on every clean-correct image, to report each attack's own curve;
    per_attack=False (AutoAttack style) runs the attacks in sequence on the images
    still robust, which is faster and gives the same worst case.
    """
    eps = sorted(check_eps(e, "evaluation.eps") for e in eps)
    device = _device(model)
    confusion = MulticlassConfusionMatrix(num_classes=num_classes).to(device)
    n = clean_correct = n_not_target = 0
    curves = [*attacks, "worst_case"] if per_attack else ["worst_case"]
    robust = {name: torch.zeros(len(eps), dtype=torch.long) for name in curves}
    perturbed = torch.zeros(len(eps), dtype=torch.long)
    targeted = {name: attack for name, attack in attacks.items() if name in TARGETABLE}
    hits = {name: torch.zeros(len(eps), dtype=torch.long) for name in targeted}

    with eval_mode(model):
        for x, y in _batches(loader, device):
            pred = predict(model, x)
            confusion.update(pred, y)
            correct = pred == y
            n += len(y)
            clean_correct += int(correct.sum())
            worst = correct.clone()
            norms = {}  # minimum-norm attacks: one run per batch serves every eps
            for i, e in enumerate(eps):
                if norm == "linf":
                    perturbed[i] += int((predict(model, fgsm(model, x, y, e)) == y).sum()) if e > 0 else int(correct.sum())
                if per_attack:
                    for name, attack in attacks.items():
                        still = _survives(model, attack, x, y, correct, e, norms, name)
                        robust[name][i] += int(still.sum())
                        worst &= still
                else:
                    for name, attack in attacks.items():
                        worst = _survives(model, attack, x, y, worst, e, norms, name)
                robust["worst_case"][i] += int(worst.sum())
            if target is not None:
                others = y != target
                n_not_target += int(others.sum())
                for name, attack in targeted.items():
                    for i, e in enumerate(eps):
                        hits[name][i] += _targeted_hits(model, attack, x[others], y[others], target, e)

    counts = confusion.compute().cpu()
    results = {
        "n_images": n,
        "clean": Rate(clean_correct, n).to_dict(),
        "confusion_matrix": {
            "counts": counts.tolist(),
            # Rows are true classes; each row sums to 100% (rows with no images stay 0).
            "row_percent": (100 * counts / counts.sum(1, keepdim=True).clamp(min=1)).tolist(),
        },
        "robustness": {"eps": eps, "accuracy": {k: [Rate(int(c), n).to_dict() for c in v] for k, v in robust.items()}},
    }
    if norm == "linf":
        results["perturbed"] = {"attack": "fgsm", "eps": eps, "accuracy": [Rate(int(c), n).to_dict() for c in perturbed]}
    if target is not None:
        results["targeted"] = {
            "target": int(target),
            "eps": eps,
            "success": {k: [Rate(int(c), n_not_target).to_dict() for c in v] for k, v in hits.items()},
        }
    return results


def _survives(model, attack, x, y, candidates, eps, norms: dict, name: str) -> torch.Tensor:
    """Per image: still classified correctly after the attack. Only `candidates` are attacked;
    the others are returned as not surviving.

    An attack with a `minimal_norms` method (a minimum-norm attack) runs once per batch,
    on all clean-correct images, and is cached in `norms`: an image survives eps exactly
    when its smallest adversarial perturbation found is larger than eps.
    """
    still = candidates.clone()
    if eps > 0 and hasattr(attack, "minimal_norms"):
        if name not in norms:
            norms[name] = attack.minimal_norms(model, x, y)
        return still & (norms[name] > eps)
    idx = candidates.nonzero().squeeze(1)
    if eps > 0 and len(idx):
        x_adv = attack(model, x[idx], y[idx], eps)
        still[idx] = predict(model, x_adv) == y[idx]
    return still


def _targeted_hits(model, attack, x, y, target, eps) -> int:
    if len(y) == 0:
        return 0
    x_adv = attack(model, x, y, eps, target=torch.full_like(y, target)) if eps > 0 else x
    return int((predict(model, x_adv) == target).sum())


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float],
                         attacks: dict[str, Attack], target: int | None = None) -> dict:
    """A few images attacked at every eps, for figures: {attack: [(eps, x_adv, pred, confidence), ...]}."""
    device = _device(model)
    x, y = to_unit_float(x.to(device)), y.to(device)
    out = {}
    with eval_mode(model):
        for name, attack in attacks.items():
            rows = []
            for e in eps:
                kwargs = {} if target is None else {"target": torch.full_like(y, target)}
                x_adv = attack(model, x, y, e, **kwargs) if e > 0 else x.clone()
                with torch.no_grad():
                    probs = model(x_adv).softmax(1)  # softmax of log-probabilities is the same softmax
                conf, pred = probs.max(1)
                rows.append((e, x_adv.cpu(), pred.cpu(), conf.cpu()))
            out[name] = rows
    return out
