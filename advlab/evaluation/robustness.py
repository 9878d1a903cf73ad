"""Clean accuracy, accuracy under attack and targeted success, in one pass over a test set.

Discipline (after AutoAttack):
- an image counts as robust only if it is classified correctly clean and under
  every attack at that eps: the per-image worst case is the headline number;
- attacks run only on images that are still classified correctly (and, for the
  worst case, still robust at the previous eps), which changes no number and
  saves the work on images already lost;
- targeted success is counted over images whose true class is not the target.

Scale: the test set streams batch by batch (data.eval_batch_size), and only integer
counts outlive a batch, never adversarial images. Under torch.distributed (Lightning
DDP) each rank evaluates its own shard and the counts are summed once at the end
(advlab.evaluation.distributed), so every rank returns the numbers of the whole set.
"""

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks._core import check_classes, check_eps, eval_mode
from advlab.attacks.fgsm import fgsm
from advlab.data import to_unit_float
from advlab.evaluation.distributed import all_reduce_sum, rank_and_world_size, shard
from advlab.evaluation.progress import progress_bar, progress_enabled
from advlab.stats import Rate
from advlab.results import WORST_CASE, Curves, Results, Targeted

def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def infer_num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The model's number of classes: the width of its output on one image of x (in eval mode). The one way
    advlab works it out (the pipeline, the checks, advlab.data.check_model_on_data); the global random state
    and the model's mode are left as they were."""
    device = _device(model)
    with torch.no_grad(), eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return int(model(to_unit_float(x[:1].to(device))).shape[1])


def _batches(loader: Iterable, device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in loader:
        yield to_unit_float(x.to(device)), y.to(device)


@dataclass
class _Counts:
    """Integer tallies: summed over batches, then over ranks with a single all-reduce."""

    images: int
    clean: int
    not_target: int
    confusion: torch.Tensor  # (true class, predicted class)
    robust: dict[str, torch.Tensor]  # curve -> count per eps
    perturbed: torch.Tensor  # per eps
    hits: dict[str, torch.Tensor]  # targeted attack -> count per eps

    @classmethod
    def zeros(cls, curves, targeted, n_eps: int, num_classes: int) -> "_Counts":
        def per_eps():
            return torch.zeros(n_eps, dtype=torch.long)

        return cls(0, 0, 0, torch.zeros(num_classes, num_classes, dtype=torch.long),
                   {name: per_eps() for name in curves}, per_eps(), {name: per_eps() for name in targeted})

    def summed_over_ranks(self) -> "_Counts":
        scalars, confusion, perturbed, *curves = all_reduce_sum(
            [torch.tensor([self.images, self.clean, self.not_target]), self.confusion, self.perturbed,
             *self.robust.values(), *self.hits.values()])
        robust, hits = curves[:len(self.robust)], curves[len(self.robust):]
        return _Counts(*map(int, scalars), confusion, dict(zip(self.robust, robust)), perturbed,
                       dict(zip(self.hits, hits)))


def evaluate_robustness(
    model: nn.Module,
    loader: Iterable,
    eps: Sequence[float],
    attacks: dict,
    target: int | None = None,
    num_classes: int | None = None,
    per_attack: bool = True,
    norm: str = "linf",
    progress: bool | None = None,
    perturbed: bool = True,
) -> Results:
    """The measured part of a Results: n_images, clean accuracy, the confusion matrix, robustness
    (each attack's accuracy per eps and the worst case), perturbed (L-inf and `perturbed` only:
    FGSM applied to every image, the seed study's "perturbed accuracy", which can exceed clean
    accuracy under label leaking; it costs one FGSM per image and eps) and, when target is given,
    targeted success per eps for the attacks that can aim at a class. num_classes (the
    confusion matrix's size): None reads it off the model's output on the first image.

    The worst case is computed with eps in increasing order: an image fooled at a
    smaller eps is fooled at every larger one (the smaller ball lies inside the
    larger), so only images robust so far are attacked. per_attack=True also runs
    every attack on every clean-correct image, to report each attack's own curve;
    per_attack=False (AutoAttack style) runs the attacks in sequence on the images
    still robust, which is faster and gives the same worst case.

    Under an initialised torch.distributed process group with several ranks, every rank
    must call this with the same loader (the whole test set): each evaluates its shard
    (see distributed.shard) and all return the same results for the whole set.

    progress: a bar with ETA on stderr, rank 0 only. None (auto): shown when stderr is a
    terminal; True: shown even when it is not; False: never. ADVLAB_QUIET=1 hides it always.
    """
    eps = sorted(check_eps(e, "evaluation.eps") for e in eps)
    device = _device(model)
    if num_classes is None:
        loader, first = _peek(loader)
        num_classes = 2 if first is None else infer_num_classes(model, first[0])
    rank, world_size = rank_and_world_size()
    loader = shard(loader, rank, world_size)
    curves = [*attacks, WORST_CASE] if per_attack else [WORST_CASE]
    targeted = {} if target is None else {
        name: attack for name, attack in attacks.items() if getattr(attack, "targeted", False)}
    counts = _Counts.zeros(curves, targeted, len(eps), num_classes)
    fgsm_all = perturbed and norm == "linf"
    bar = progress_bar(_total_units(loader, len(eps) * (len(attacks) + len(targeted))),
                       progress_enabled(progress, rank))
    with eval_mode(model), bar:
        for x, y in _batches(loader, device):
            _count_batch(model, x, y, eps, attacks, targeted, target, per_attack, fgsm_all, counts, bar.update)
    return _results(counts.summed_over_ranks(), eps, fgsm_all, target)


def _peek(loader: Iterable):
    """(loader, its first batch or None), without losing that batch: a one-pass iterator (a generator)
    gets it put back in front; a re-iterable loader is iterated once more from the start."""
    if iter(loader) is loader:
        first = next(loader, None)
        return (loader if first is None else itertools.chain([first], loader)), first
    with torch.random.fork_rng(devices=[]):  # a shuffling loader draws its seed from the global stream
        return loader, next(iter(loader), None)


def _total_units(loader, units_per_batch: int) -> int | None:
    try:
        return len(loader) * units_per_batch
    except TypeError:  # a generator or an iterable dataset: the bar shows no ETA
        return None


def _count_batch(model, x, y, eps, attacks, targeted, target, per_attack, fgsm_all, counts: _Counts, tick) -> None:
    """Add one batch to `counts`; tick() once per attack run at one eps."""
    pred = predict(model, x)
    counts.confusion += _confusion(y, pred, counts.confusion.shape[0])
    correct = pred == y
    counts.images += len(y)
    counts.clean += int(correct.sum())
    worst = correct.clone()
    norms = {}  # minimum-norm attacks: one run per batch serves every eps
    for i, e in enumerate(eps):
        if fgsm_all:
            perturbed = predict(model, fgsm(model, x, y, e)) == y if e > 0 else correct
            counts.perturbed[i] += int(perturbed.sum())
        for name, attack in attacks.items():
            if per_attack:
                still = _survives(model, attack, x, y, correct, e, norms, name)
                counts.robust[name][i] += int(still.sum())
                worst &= still
            else:
                worst = _survives(model, attack, x, y, worst, e, norms, name)
            tick()
        counts.robust[WORST_CASE][i] += int(worst.sum())
    if targeted:
        others = y != target
        counts.not_target += int(others.sum())
        for name, attack in targeted.items():
            for i, e in enumerate(eps):
                counts.hits[name][i] += _targeted_hits(model, attack, x[others], y[others], target, e)
                tick()


def _confusion(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (true class, predicted class) of one batch, on the CPU.

    Counted here rather than by torchmetrics, whose compute() syncs across ranks by itself:
    this way the matrix is summed over ranks once, with the other counts."""
    check_classes(y, num_classes, "labels")
    check_classes(pred, num_classes, f"predicted classes (num_classes={num_classes})")
    return torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes**2).view(num_classes, num_classes)


def _results(counts: _Counts, eps: list[float], fgsm_all: bool, target: int | None) -> Results:
    n = counts.images

    def rates(per_eps: torch.Tensor, total: int) -> list[Rate]:
        return [Rate(int(c), total) for c in per_eps]

    return Results(
        n_images=n, clean=Rate(counts.clean, n), confusion=counts.confusion.tolist(),
        robustness=Curves(eps, {k: rates(v, n) for k, v in counts.robust.items()}),
        perturbed=Curves(eps, {"fgsm": rates(counts.perturbed, n)}) if fgsm_all else None,
        targeted=None if target is None else Targeted(
            int(target), None, Curves(eps, {k: rates(v, counts.not_target) for k, v in counts.hits.items()})),
    )


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
                         attacks: dict, target: int | None = None) -> dict:
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
