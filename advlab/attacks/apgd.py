"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): PGD with momentum whose step size
adapts itself per image, so it needs no step-size tuning. APGD-T is its targeted
form as used in AutoAttack: targeted DLR toward each of the top other classes in turn.

One APGD run, per image (f = the objective to maximise, P = projection onto the
eps-ball around x intersected with [0, 1], d = sign for L-inf, unit L2 direction for L2):

    x_0 = random point of the ball, eta = 2 * eps
    x_1 = P(x_0 + eta * d(grad f(x_0)))                              (no momentum)
    z_{k+1} = P(x_k + eta * d(grad f(x_k)))
    x_{k+1} = P(x_k + a * (z_{k+1} - x_k) + (1 - a) * (x_k - x_{k-1}))  (a = `momentum`)

At each halving point w_j (see `halving_points`; the paper calls them checkpoints) the step size
is halved and the iterate jumps back to the best point found so far when either
  (a) fewer than a fraction rho of the steps since w_{j-1} increased f, or
  (b) eta was not halved at w_{j-1} and the best f has not improved since w_{j-1}.
"""

import math
from collections.abc import Callable

import torch
from torch import nn

from advlab.attacks import _core
from advlab.attacks._core import (check_classes_of, check_eps, check_images, check_int,
                                 check_n_target_classes, check_norm, check_number, check_steps, check_target,
                                 eval_mode, fooled, per_image, prepare_model)
from advlab.attacks.losses import dlr, get_loss

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# AutoAttack's step-size rule and momentum (Croce & Hein 2020), the defaults of every APGD here, and its
# targeted attacks' number of target classes (APGD-T's and FAB-T's default; advlab.attacks.autoattack).
RHO, MOMENTUM, N_TARGET_CLASSES = 0.75, 0.75, 9


def halving_points(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps) at which APGD may halve its step size.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) while p_j <= 1:
    the first phase explores with a large step for 22% of the budget, then the phases
    shrink (by 3% of the budget each, down to 6%) so the end of the run refines often.
    Duplicates (possible for very small `steps`) are dropped; w_0 = 0 is the start.
    """
    steps = check_steps(steps)
    p = [0.0, 0.22]
    while True:
        # Rounding keeps accumulated float error from pushing e.g. 0.93 to 0.9300000001.
        nxt = round(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06), 10)
        if nxt > 1:
            break
        p.append(nxt)
    # Rounding before ceil: 0.41 * 100 is 41.00000000000001 in floating point.
    return sorted({math.ceil(round(pj * steps, 6)) for pj in p})


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    target=None,
    restarts: int = 1,
    rho: float = RHO,
    momentum: float = MOMENTUM,
    seed: int | torch.Generator = 0,
    observe=None,
) -> torch.Tensor:
    """APGD (see the module docstring) with `steps` updates per run.

    loss: "ce", "dlr" or "margin"; with `target` (class per image, or one int) the
    objective pulls toward the target and success means argmax == target, otherwise
    success means argmax != y. Returns, per image, the first point that succeeded,
    else the point with the highest objective. Images that already succeed at x are
    returned unchanged (not attacked). restarts > 1 runs again from new random starts
    on the images not yet fooled, keeping the per-image worst case. seed: the random
    starts' generator or its seed (advlab.attacks._core.make_generator). observe(step, idx, out),
    when given, sees the model output of every iterate of the images still attacked (rows `idx` of
    the images the run attacks; advlab.evaluation.convergence traces it).
    """
    eps, steps, norm = check_eps(eps), check_steps(steps), check_norm(norm)
    loss_fn = get_loss(loss)
    restarts = check_int(restarts, "restarts", 1)
    rho = check_number(rho, "rho", 0, 1, low_open=True, high_open=True,
                       meaning="(fraction of steps that must raise the loss)")
    momentum = check_number(momentum, "momentum", 0, 1, low_open=True,
                            meaning="(weight of the new step; 1 = no momentum)")
    check_images(x, y)
    target = check_target(y, target)
    x = x.detach()
    generator = _core.make_generator(seed, x.device)
    with eval_mode(model):
        attacked, clean = prepare_model(model, x)
        check_classes_of(clean, y, target)
        if eps == 0:
            return x.clone()
        run = RunConfig(eps, norm, steps, loss_fn, rho, momentum, success_is_target=target is not None,
                        generator=generator, observe=observe)
        x_adv, _ = run_apgd(attacked, x, y, target, clean, restarts, run)
        return x_adv


def apgd_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int = N_TARGET_CLASSES,
    restarts: int = 1,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """APGD-T (AutoAttack): for k = 2 .. n_target_classes + 1, target the k-th highest
    class of the clean output with the targeted DLR loss, running APGD only on the
    images not yet misclassified. Success is untargeted (argmax != y): any wrong class
    counts, the target only steers the search. Returns per image the first success;
    images never fooled get the point with the highest untargeted DLR over all targets.
    Images misclassified at x are returned unchanged.
    """
    eps, steps, norm = check_eps(eps), check_steps(steps), check_norm(norm)
    restarts = check_int(restarts, "restarts", 1)
    check_images(x, y)
    x = x.detach()
    generator = _core.make_generator(seed, x.device)
    with eval_mode(model):
        attacked, clean = prepare_model(model, x)
        check_classes_of(clean, y)
        n_target_classes = check_n_target_classes(n_target_classes, clean.shape[1])
        if eps == 0:
            return x.clone()
        run = RunConfig(eps, norm, steps, dlr, rho=RHO, momentum=MOMENTUM, success_is_target=False,
                        generator=generator)
        x_adv, _ = run_apgd_targeted(attacked, x, y, clean, n_target_classes, restarts, run)
        return x_adv


# ----------------------------------------------------------------------------- on a prepared model


def run_apgd(attacked, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, clean: torch.Tensor,
             restarts: int, run: "RunConfig"):
    """APGD on x, given the model as the attacks call it (advlab.attacks._core.prepare_model) and its
    clean outputs (what AutoAttack's loop shares between its stages); returns (points, fooled per image)."""
    hit = fooled(clean, y, target)
    x_adv, hit, _, _ = _attack_with_restarts(attacked, x, y, target, hit, restarts, run)
    return x_adv, hit


def run_apgd_targeted(attacked, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, n_target_classes: int,
                      restarts: int, run: "RunConfig", first_target: int = 1):
    """APGD-T on x, given the model as the attacks call it and its clean outputs; returns (points,
    fooled per image).

    The targets are the classes ranked first_target ... n_target_classes by clean output after the
    top one (first_target > 1: the ones before were attacked already, e.g. by fast mode).

    The untargeted DLR that picks, among the targets, the point kept for an image never fooled
    is computed from the outputs the runs recorded at their returned points (no extra forward).
    """
    hit = fooled(clean, y)
    ranked = clean.argsort(1, descending=True)
    x_adv, best_score = x.clone(), torch.full_like(y, -math.inf, dtype=clean.dtype)
    for k in range(first_target, n_target_classes + 1):  # column k of `ranked` is the (k+1)-th highest class
        todo = ~hit
        if not todo.any():
            break
        candidate, new_hit, _, out = _attack_with_restarts(attacked, x, y, ranked[:, k], hit.clone(), restarts, run)
        # Targeted DLR values for different targets are not comparable, so images still
        # unfooled keep whichever target's point came closest to an untargeted success.
        score = torch.full_like(best_score, -math.inf)
        score[todo] = dlr(out[todo], y[todo])
        take = todo & (new_hit | (score > best_score))
        x_adv[take] = candidate[take]
        best_score = torch.where(take, score, best_score)
        hit = new_hit
    return x_adv, hit


# ----------------------------------------------------------------------------- one run


class RunConfig:
    """The settings shared by every run of one attack call."""

    def __init__(self, eps: float, norm: str, steps: int, loss_fn: LossFn, rho: float, momentum: float,
                 success_is_target: bool, generator: torch.Generator, observe=None):
        self.eps, self.norm, self.steps, self.loss_fn, self.generator = eps, norm, steps, loss_fn, generator
        self.observe = observe
        self.rho, self.momentum, self.success_is_target = rho, momentum, success_is_target
        self.halving_points = halving_points(steps)


class _State:
    """Per-image search state of the images still being attacked (rows align with `idx`).

    Fooled images are dropped from every tensor at once, so later steps cost nothing for them.
    """

    def __init__(self, **tensors: torch.Tensor | None):
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor) -> "_State":
        return _State(**{k: (v[mask] if v is not None else None) for k, v in self.__dict__.items()})


def _attack_with_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                          done: torch.Tensor, restarts: int, run: RunConfig):
    """Run APGD `restarts` times, each from a new random start on the images not yet fooled.

    Returns (points, fooled per image, best objective, model output at the points); `done` (fooled on
    entry) is updated in place, and images fooled on entry keep x itself (their objective is -inf, their output 0).
    A later restart replaces an earlier result only if it fooled the model or reached a
    higher objective (the objective is the same function across restarts, so comparable).
    """
    x_adv = x.clone()
    best_loss = torch.full(y.shape, -math.inf, dtype=x.dtype, device=x.device)
    best_out = None
    for _ in range(restarts):
        todo = (~done).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        t = target[todo] if target is not None else None
        start = _core.random_start(x[todo], run.eps, run.norm, run.generator)
        points, hit, loss, out = _run(model, x[todo], y[todo], t, start, run)
        if best_out is None:
            best_out = out.new_zeros((x.shape[0], out.shape[1]))
        take = hit | (loss > best_loss[todo])
        x_adv[todo[take]] = points[take]
        best_out[todo[take]] = out[take]
        best_loss[todo] = torch.where(take, loss, best_loss[todo])
        done[todo] = hit
    return x_adv, done, best_loss, best_out


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
         start: torch.Tensor, run: RunConfig):
    """One APGD run from `start` (the update rule is in the module docstring).

    Returns (points, fooled, best objective, model output at the points) per image: the first
    point that fooled the model, or else the point with the highest objective seen.
    """
    n = x.shape[0]
    out_points, out_fooled = start.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    out_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    eta = torch.full((n,) + (1,) * (x.dim() - 1), 2 * run.eps, dtype=x.dtype, device=x.device)

    grad, out, loss = _core.input_gradient(model, start, y, run.loss_fn, target)
    out_logits = out.new_zeros(out.shape)
    if run.observe is not None:
        run.observe(0, torch.arange(n, device=x.device), out)
    s = _State(idx=torch.arange(n, device=x.device), x=x, y=y, target=target, cur=start, prev=start, grad=grad,
               loss=loss, eta=eta, best=start, best_loss=loss, best_grad=grad, best_out=out,
               increases=torch.zeros_like(y), best_loss_at_point=loss,
               reduced_at_point=torch.zeros(n, dtype=torch.bool, device=x.device))
    s = _record_successes(s, out, run, out_points, out_fooled, out_loss, out_logits)
    points = run.halving_points[1:]

    for k in range(run.steps):
        if s.idx.numel() == 0:
            break
        nxt = _step(s, run, first=k == 0)
        last = k + 1 == run.steps
        grad, out, loss = _evaluate(model, nxt, s.y, s.target, run.loss_fn, need_grad=not last)
        s.increases = s.increases + (loss > s.loss).long()
        s.prev, s.cur, s.grad, s.loss = s.cur, nxt, grad, loss
        _update_best(s, out)
        if run.observe is not None:
            run.observe(k + 1, s.idx, out)
        s = _record_successes(s, out, run, out_points, out_fooled, out_loss, out_logits)
        if k + 1 in points and not last:
            j = points.index(k + 1)
            _at_halving_point(s, run.rho, interval=points[j] - (points[j - 1] if j else 0))

    # Images never fooled: return their best point.
    out_points[s.idx] = s.best
    out_loss[s.idx] = s.best_loss
    out_logits[s.idx] = s.best_out
    return out_points, out_fooled, out_loss, out_logits


def _step(s: _State, run: RunConfig, first: bool) -> torch.Tensor:
    """The next iterate: a projected steepest-ascent step, blended with the previous move by momentum."""
    z = _core.project(s.cur + s.eta * _core.steepest_step(s.grad, run.norm), s.x, run.eps, run.norm)
    if first:  # no previous move to carry yet
        return z
    a = run.momentum
    return _core.project(s.cur + a * (z - s.cur) + (1 - a) * (s.cur - s.prev), s.x, run.eps, run.norm)


def _update_best(s: _State, out: torch.Tensor) -> None:
    """Remember, per image, the highest-objective point, its gradient (the restart point) and
    the model's output there."""
    better = s.loss > s.best_loss
    mask = per_image(better, s.cur)
    s.best = torch.where(mask, s.cur, s.best)
    s.best_grad = torch.where(mask, s.grad, s.best_grad) if s.grad is not None else s.best_grad
    s.best_loss = torch.where(better, s.loss, s.best_loss)
    s.best_out = torch.where(better[:, None], out, s.best_out)


def _at_halving_point(s: _State, rho: float, interval: int) -> None:
    """At halving point w_j: halve eta and jump back to the best point where progress stalled.

    (a) too few of the last `interval` steps increased the objective: the step oscillates;
    (b) eta was kept at the previous halving point yet the best objective has not moved since.
    Momentum restarts from the best point (prev = cur), so it carries no stale move across the jump.
    """
    oscillating = s.increases < rho * interval
    stalled = ~s.reduced_at_point & (s.best_loss <= s.best_loss_at_point)
    reduce = oscillating | stalled
    mask = per_image(reduce, s.cur)
    s.eta = torch.where(mask, s.eta / 2, s.eta)
    s.cur = torch.where(mask, s.best, s.cur)
    s.prev = torch.where(mask, s.best, s.prev)
    s.grad = torch.where(mask, s.best_grad, s.grad)
    s.loss = torch.where(reduce, s.best_loss, s.loss)
    s.reduced_at_point, s.best_loss_at_point = reduce, s.best_loss.clone()
    s.increases = torch.zeros_like(s.increases)


def _record_successes(s: _State, out: torch.Tensor, run: RunConfig, out_points: torch.Tensor,
                      out_fooled: torch.Tensor, out_loss: torch.Tensor, out_logits: torch.Tensor) -> _State:
    """Write the current point of newly fooled images to the result and stop attacking them."""
    hit = fooled(out, s.y, s.target if run.success_is_target else None)
    if not hit.any():
        return s
    rows = s.idx[hit]
    out_points[rows], out_fooled[rows], out_loss[rows], out_logits[rows] = s.cur[hit], True, s.loss[hit], out[hit]
    return s.keep(~hit)


# ----------------------------------------------------------------------------- helpers


def _evaluate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss_fn: LossFn,
              need_grad: bool):
    """(gradient or None, output, objective) at x_adv; the last iterate needs no backward pass."""
    if need_grad:
        return _core.input_gradient(model, x_adv, y, loss_fn, target)
    out = _core.forward(model, x_adv)
    return None, out, loss_fn(out, y, target)
