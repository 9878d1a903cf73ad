"""Clean accuracy, accuracy under attack and targeted success, per image, in one pass over a test set.

Discipline (after AutoAttack):
- an image counts as robust only if it is classified correctly clean and under
  every attack at that eps: the per-image worst case is the headline number;
- attacks run only on images that are still classified correctly (and, in sequence mode, still
  robust to the attacks before), which changes no number and saves the work on images already lost;
- targeted success is counted over images whose true class is not the target.

What outlives a batch is its rows of the per-image record (advlab.evaluation.record: survival and
margin per image, attack and eps; a few numbers per image), never adversarial images unless asked
for (keep_adversarial: the worst-case point per image and eps). Every number of the Results is an
aggregate of the record (`results_from`). Under torch.distributed (Lightning DDP) each rank evaluates
its own shard and the ranks gather their rows once at the end (advlab.evaluation.distributed), so
every rank returns the record and numbers of the whole set. A `store` (advlab.evaluation.resume)
keeps each finished batch on disk, so a killed evaluation resumes from its last finished batch.
"""

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from advlab.attacks._core import check_classes, check_eps, eval_mode
from advlab.attacks.fgsm import fgsm
from advlab.attacks.losses import margin
from advlab.data import to_unit_float
from advlab.evaluation.distributed import gather_records, indexed_batches, rank_and_world_size, shard
from advlab.evaluation.progress import progress_bar, progress_enabled
from advlab.evaluation.record import WORST, PerImage, col, fmt
from advlab.results import WORST_CASE, Curves, Results, Targeted
from advlab.stats import Rate


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def infer_num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The model's number of classes: the width of its output on one image of x (in eval mode). The one way
    advlab works it out (the pipeline, the checks, advlab.data.check_model_on_data); the global random state
    and the model's mode are left as they were."""
    device = _device(model)
    with torch.no_grad(), eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return int(model(to_unit_float(x[:1].to(device))).shape[1])


def logit_margin(out: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """z_y - max_{j != y} z_j per image (> 0: correctly classified), at float32 precision (what the record's
    file keeps exactly), as float64 numpy."""
    return (-margin(out, y)).float().cpu().numpy().astype(np.float64)


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
    keep_adversarial: bool = False,
    store=None,
) -> Results:
    """The measured part of a Results: the per-image record (results.per_image) and what it adds up to:
    n_images, clean accuracy, the confusion matrix, robustness (each attack's accuracy per eps and the
    worst case), perturbed (L-inf and `perturbed` only: FGSM applied to every image, the seed study's
    "perturbed accuracy", which can exceed clean accuracy under label leaking; it costs one FGSM per
    image and eps) and, when target is given, targeted success per eps for the attacks that can aim at
    a class. num_classes (the confusion matrix's size): None reads it off the model's output on the
    first image.

    The worst case is computed with eps in increasing order: an image fooled at a smaller
    eps is fooled at every larger one (the smaller ball lies inside the larger), so only images
    robust so far are attacked. per_attack=True also runs every attack on every clean-correct image,
    to report each attack's own curve; per_attack=False (AutoAttack style) runs the attacks in
    sequence on the images still robust, which is faster and gives the same worst case.

    keep_adversarial: also return, per eps, the worst-case adversarial image of every image (x where
    nothing was found) as results.adversarial {eps: tensor on the CPU}. store: a resume.BatchStore.

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
    targeted = {} if target is None else {
        name: attack for name, attack in attacks.items() if getattr(attack, "targeted", False)}
    spec = _BatchSpec(eps, attacks, targeted, target, per_attack, perturbed and norm == "linf", num_classes,
                      keep_adversarial)
    bar = progress_bar(_total_units(loader, len(eps) * (len(attacks) + len(targeted))),
                       progress_enabled(progress, rank))
    parts, adversarial = [], []
    with eval_mode(model), bar:
        for number, (index, x, y) in enumerate(indexed_batches(loader)):
            saved = store.load(number) if store is not None else None
            if saved is None:
                part, points = _measure_batch(model, to_unit_float(x.to(device)), y.to(device), index, spec, bar.update)
                if store is not None:
                    store.save(number, part.columns, {fmt(e): t.numpy() for e, t in points.items()})
            else:  # finished before the evaluation was killed: its rows, as they were
                columns, arrays = saved
                part, points = spec.record(columns), {e: torch.from_numpy(arrays[fmt(e)]) for e in eps
                                                      if fmt(e) in arrays}
                bar.update(len(eps) * (len(attacks) + len(targeted)))
            parts.append(part)
            adversarial.append(points)
    record = gather_records(PerImage.concat(parts) if parts else _empty(spec))
    record.worst_case()
    results = results_from(record, num_classes)
    if keep_adversarial:
        results.adversarial = {e: torch.cat([a[e] for a in adversarial]) if adversarial else torch.empty(0)
                               for e in eps} if world_size == 1 else None
    return results


class _BatchSpec:
    """What every batch of one evaluation is measured for."""

    def __init__(self, eps, attacks, targeted, target, per_attack, fgsm_all, num_classes, keep_adversarial):
        self.eps, self.attacks, self.targeted, self.target = eps, attacks, targeted, target
        self.per_attack, self.fgsm_all, self.num_classes = per_attack, fgsm_all, num_classes
        self.keep_adversarial = keep_adversarial

    def record(self, columns: dict) -> PerImage:
        names = list(self.attacks)
        return PerImage(list(self.eps), names, columns, complete=names if self.per_attack else [],
                        sources={}, target=self.target)


def _empty(spec: _BatchSpec) -> PerImage:
    """The record of an empty test set (or of a rank with no images)."""
    empty = np.zeros(0)
    columns = {"index": empty.astype(np.int64), "label": empty.astype(np.int64),
               "clean_pred": empty.astype(np.int64), "clean_margin": empty}
    for name, attack in spec.attacks.items():
        if hasattr(attack, "minimal_norms") and any(e > 0 for e in spec.eps):
            columns[col("min_norm", name)] = empty
    for e in spec.eps:
        for name in spec.attacks:
            columns[col("survived", name, e)] = empty
            columns[col("margin", name, e)] = empty
        if spec.fgsm_all:
            columns[col("perturbed", None, e)] = empty
        for name in spec.targeted:
            columns[col("targeted", name, e)] = empty
    return spec.record(columns)


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


def _measure_batch(model, x, y, index: np.ndarray, spec: _BatchSpec, tick) -> tuple[PerImage, dict]:
    """One batch's rows of the record (and, with keep_adversarial, its worst-case points per eps);
    tick() once per attack run at one eps."""
    out = _outputs(model, x)
    check_classes(y, spec.num_classes, "labels")
    pred = out.argmax(1)
    check_classes(pred, spec.num_classes, f"predicted classes (num_classes={spec.num_classes})")
    correct = pred == y
    columns = {"index": np.asarray(index, dtype=np.int64), "label": y.cpu().numpy().astype(np.int64),
               "clean_pred": pred.cpu().numpy().astype(np.int64), "clean_margin": logit_margin(out, y)}
    worst = correct.clone()  # still robust to every attack so far (all smaller eps, the attacks before)
    adversarial, point = {}, x.clone() if spec.keep_adversarial else None
    norms = {}  # minimum-norm attacks: one run per batch serves every eps
    for e in spec.eps:
        if spec.fgsm_all:
            kept = predict(model, fgsm(model, x, y, e)) == y if e > 0 else correct
            columns[col("perturbed", None, e)] = kept.double().cpu().numpy()
        for name, attack in spec.attacks.items():
            on = correct if spec.per_attack else worst
            survived, margins, x_adv = _attack(model, attack, x, y, on, e, norms, name, out, point is not None)
            columns[col("survived", name, e)] = survived
            columns[col("margin", name, e)] = margins
            fell = torch.as_tensor(survived == 0, device=x.device)
            if point is not None and x_adv is not None:
                newly = worst & fell
                point[newly] = x_adv[newly]
            worst &= ~fell
            tick()
        if point is not None:
            adversarial[e] = point.cpu().clone()
    for name, attack in spec.attacks.items():
        if hasattr(attack, "minimal_norms") and any(e > 0 for e in spec.eps):
            # each image's distance to the boundary as the minimum-norm attack found it (0: misclassified)
            found = norms[name].float().cpu().numpy().astype(np.float64) if name in norms else np.full(len(y), np.nan)
            columns[col("min_norm", name)] = np.where(correct.cpu().numpy(), found, 0.0)
    for name, attack in spec.targeted.items():
        others = y != spec.target
        for e in spec.eps:
            hit = np.full(len(y), np.nan)
            hit[others.cpu().numpy()] = _targeted_hits(model, attack, x[others], y[others], spec.target, e)
            columns[col("targeted", name, e)] = hit
            tick()
    return spec.record(columns), adversarial


def _attack(model, attack, x, y, on: torch.Tensor, eps: float, norms: dict, name: str, clean_out: torch.Tensor,
            want_points: bool = False):
    """(survived, margin, the points or None) of attack at eps on the images `on`: float numpy, nan elsewhere.

    An attack with a `minimal_norms` method (a minimum-norm attack) runs once per batch, on all
    clean-correct images, and is cached in `norms`: an image survives eps exactly when its smallest
    adversarial perturbation found is larger than eps (its margin is not measured: nan; its points are
    found by running it at eps only when want_points).
    """
    survived = np.full(len(y), np.nan)
    margins = np.full(len(y), np.nan)
    idx = on.nonzero().squeeze(1)
    if len(idx) == 0:
        return survived, margins, None
    rows = idx.cpu().numpy()
    if eps == 0:
        survived[rows] = 1.0
        margins[rows] = logit_margin(clean_out[idx], y[idx])
        return survived, margins, None
    if hasattr(attack, "minimal_norms"):
        if name not in norms:
            norms[name] = attack.minimal_norms(model, x, y)
        survived[rows] = (norms[name][idx] > eps).double().cpu().numpy()
        if not want_points:
            return survived, margins, None
        x_adv = x.clone()
        x_adv[idx] = attack(model, x[idx], y[idx], eps)
        return survived, margins, x_adv
    points = attack(model, x[idx], y[idx], eps)
    out = _outputs(model, points)
    survived[rows] = (out.argmax(1) == y[idx]).double().cpu().numpy()
    margins[rows] = logit_margin(out, y[idx])
    x_adv = x.clone()
    x_adv[idx] = points
    return survived, margins, x_adv


def _targeted_hits(model, attack, x, y, target, eps) -> np.ndarray:
    if len(y) == 0:
        return np.zeros(0)
    x_adv = attack(model, x, y, eps, target=torch.full_like(y, target)) if eps > 0 else x
    return (predict(model, x_adv) == target).double().cpu().numpy()


def results_from(record: PerImage, num_classes: int) -> Results:
    """The measured part of a Results, every number an aggregate of the per-image record: clean accuracy
    and the confusion matrix from the clean predictions, each complete attack's curve and the worst case
    from the survival columns, perturbed and targeted success from theirs."""
    n = len(record)
    label, pred = record.columns["label"], record.columns["clean_pred"]
    confusion = np.bincount(label * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)

    def rates(kind: str, name: str | None, total: int) -> list[Rate]:
        return [Rate(int(np.nansum(record.columns[col(kind, name, e)] == 1)), total) for e in record.eps]

    curves = {name: rates("survived", name, n) for name in record.attacks if name in record.complete}
    curves[WORST_CASE] = rates("survived", WORST, n)
    fgsm_all = bool(record.eps) and record.has(col("perturbed", None, record.eps[0]))
    targeted = record.targeted_attacks()
    not_target = int((label != record.target).sum()) if record.target is not None else 0
    results = Results(
        n_images=n, clean=Rate(int(record.correct.sum()), n), confusion=confusion.tolist(),
        robustness=Curves(list(record.eps), curves),
        perturbed=Curves(list(record.eps), {"fgsm": rates("perturbed", None, n)}) if fgsm_all else None,
        targeted=None if record.target is None else Targeted(
            int(record.target), None, Curves(list(record.eps), {a: rates("targeted", a, not_target)
                                                                 for a in targeted})),
    )
    results.per_image = record
    return results


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


def extend_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, record: PerImage, attacks: dict,
                      source: str, batch_size: int = 500, progress: bool | None = None,
                      adversarial: dict | None = None, store=None) -> PerImage:
    """`record` with the columns of more `attacks`, each run only on the images the record (and the new
    attacks before it, at this eps and the smaller ones) leaves robust: the AutoAttack-style sequence after
    the attacks already run. The worst case can only go down; the new attacks' own curves are not complete
    (they saw the survivors only), so they count in the worst case and not as curves of their own.

    images, labels: the evaluated set (record.columns["index"] are positions in it); source: names the run
    that produced the new columns (record.sources); adversarial: the run's worst-case points per eps, updated
    in place for the images the new attacks break (when given); store: a resume.BatchStore."""
    device = _device(model)
    new = {name: attack for name, attack in attacks.items() if name not in record.attacks}
    index = record.columns["index"]
    parts = []
    bar = progress_bar(math.ceil(len(index) / batch_size) * len(record.eps) * len(new),
                       progress_enabled(progress, rank_and_world_size()[0]))
    with eval_mode(model), bar:
        for number, start in enumerate(range(0, len(index), batch_size)):
            rows = np.arange(start, min(start + batch_size, len(index)))
            saved = store.load(number) if store is not None else None
            if saved is None:
                x = to_unit_float(images[index[rows]].to(device))
                y = labels[index[rows]].to(device)
                done = _extend_batch(model, x, y, record, rows, new, bar.update, adversarial is not None)
                if store is not None:
                    arrays = {f"{kind}@{fmt(e)}": a for e, pair in done[1].items() for kind, a in
                              zip(("rows", "points"), (pair[0], pair[1].numpy()))}
                    store.save(number, done[0], arrays)
            else:
                columns, arrays = saved
                points = {e: (arrays[f"rows@{fmt(e)}"], torch.from_numpy(arrays[f"points@{fmt(e)}"]))
                          for e in record.eps if f"rows@{fmt(e)}" in arrays}
                done = columns, points
                bar.update(len(record.eps) * len(new))
            parts.append(done)
    for name in new:
        for e in record.eps:
            for kind in ("survived", "margin"):
                record.columns[col(kind, name, e)] = np.concatenate([p[0][col(kind, name, e)] for p in parts]) \
                    if parts else np.zeros(0)
        record.sources[name] = source
    if adversarial is not None:
        for columns, points in parts:
            for e, (rows, x_adv) in points.items():
                adversarial[e][rows] = x_adv
    record.attacks += list(new)
    record.worst_case()
    return record


def _extend_batch(model, x, y, record: PerImage, rows: np.ndarray, attacks: dict, tick, want_points: bool):
    """One batch of extend_robustness: (the new columns' rows, {eps: (record rows broken here, their points)})."""
    alive = torch.ones(len(rows), dtype=torch.bool, device=x.device)  # survived the new attacks at smaller eps
    columns, points = {}, {}
    out = _outputs(model, x)
    for e in record.eps:
        alive &= torch.as_tensor(record.worst(e)[rows], device=x.device)
        broken_rows, broken_points = [], []
        for name, attack in attacks.items():
            survived, margins, x_adv = _attack(model, attack, x, y, alive.clone(), e, {}, name, out, want_points)
            columns[col("survived", name, e)] = survived
            columns[col("margin", name, e)] = margins
            fell = torch.as_tensor(survived == 0, device=x.device)
            if want_points and x_adv is not None and fell.any():
                broken_rows.append(rows[fell.cpu().numpy()])
                broken_points.append(x_adv[fell].cpu())
            alive &= ~fell
            tick()
        if broken_rows:
            points[e] = (np.concatenate(broken_rows), torch.cat(broken_points))
    return columns, points
