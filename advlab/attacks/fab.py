"""Fast Adaptive Boundary attack (Croce & Hein 2020), a minimum-norm attack for L-inf and L2.

FAB looks for the adversarial point closest to x instead of the worst point of a fixed
ball. Each step linearises the classifier at the current point x_i, takes the linearised
decision boundary nearest to it (the hyperplane w.z + b = 0 of the logit difference
f_s - f_c to the closest other class s, or to the target class), and computes two
box-constrained projections onto that hyperplane: delta from x_i and delta_0 from the
original x. The next point is

    x_{i+1} = clip_[0,1]((1 - alpha) (x_i + eta delta) + alpha (x + eta delta_0)),
    alpha = min(||delta|| / (||delta|| + ||delta_0||), alpha_max),

so the step is biased toward the projection of the original image (which keeps the
perturbation small) and overshoots by eta to land past the boundary. Once x_{i+1} is
adversarial it is recorded if it is the smallest so far, and the search steps back
toward x: x_{i+1} <- x + beta (x_{i+1} - x), then approaches the boundary again from
closer in. Restarts begin at random points near x, inside a ball of half the best norm
found so far, so they explore other directions at the scale that matters.

One run yields the smallest adversarial norm per image, hence robust accuracy at every
eps at once (`minimal_norms`, `accuracy_curve`). Those norms are upper bounds on the true
minimal norms (FAB can miss closer adversarials), so the curve is an upper bound on the
true robust accuracy, like any attack's.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks._core import (check_classes_of, check_eps, check_images, check_int,
                                 check_n_target_classes, check_norm, check_number, check_steps, check_target,
                                 eval_mode, fooled, forward, make_generator, per_image, perturbation_norm,
                                 prepare_model, random_start)
from advlab.attacks.apgd import N_TARGET_CLASSES

# Random-start radius where no adversarial was found yet and no eps was given (the
# defaults of the reference implementation): half of it is used, like half the best norm.
DEFAULT_START_RADIUS = {"linf": 0.3, "l2": 1.0}
# The paper's step parameters, also used by fab_targeted and minimal_norms.
ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9


# ---------------------------------------------------------------- box-constrained projections


def _smallest_level(weight: torch.Tensor, cap: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest t >= 0 with g(t) = sum_j weight_j * min(t, cap_j) >= need.

    g is concave, piecewise linear and non-decreasing, with breakpoints at the caps. Newton's
    method from t = 0 finds the answer in a few passes over the row: with R the caps reached
    at the current level (cap_j <= t), the tangent gives t' = (need - sum_R weight_j cap_j) /
    sum_{not R} weight_j, which by concavity never passes the answer; once t' does not pass
    the smallest cap above the level, it lies on g's last segment and is the answer in closed
    form (the formula of `_smallest_level_sorted`, clamped to that segment likewise). Rows
    where even t = max(cap) falls short (the box cannot reach the hyperplane) get t = max(cap):
    the box point that goes furthest toward it. Rows still unsolved after _NEWTON_PASSES passes
    (many breakpoints below the answer) are solved by sorting. weight, cap: (N, D) >= 0.
    """
    t = torch.zeros_like(need)
    rows = (need > 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return t
    w, c, nd = weight, cap, need
    if rows.numel() < need.numel():
        w, c, nd = weight[rows], cap[rows], need[rows]
    wc = w * c
    buf = torch.empty_like(c)  # one scratch tensor for the masked reductions of every pass
    zero, inf = c.new_zeros(()), c.new_full((), math.inf)
    level = torch.zeros_like(nd)
    for _ in range(_NEWTON_PASSES):
        reached = c <= level[:, None]
        scratch = buf[: c.shape[0]]
        # need - the sum over reached caps of weight * cap
        excess = nd - torch.where(reached, wc, zero, out=scratch).sum(1)
        slope = torch.where(reached, zero, w, out=scratch).sum(1)
        nxt = excess / slope  # the tangent's root (inf or nan where slope = 0)
        next_cap = torch.where(reached, inf, c, out=scratch).amin(1)  # the smallest cap above the level
        stuck = slope == 0  # every cap with weight is reached: the box cannot reach the hyperplane
        done = (nxt <= next_cap) | stuck
        if done.any():
            left = torch.where(reached, c, zero, out=scratch).amax(1)
            right = torch.where((next_cap < math.inf) & ~stuck, next_cap, c.amax(1))
            solved = torch.minimum(torch.maximum(excess / slope.clamp_min(1e-30), left), right)
            t[rows[done]] = solved[done]
            if done.all():
                return t
            keep = ~done
            rows, w, c, nd, wc, nxt = rows[keep], w[keep], c[keep], nd[keep], wc[keep], nxt[keep]
        level = nxt
    t[rows] = _smallest_level_sorted(w, c, nd)
    return t


# Newton passes before `_smallest_level` sorts the rows left; FAB's rows need a handful.
_NEWTON_PASSES = 24


def _smallest_level_sorted(weight: torch.Tensor, cap: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """`_smallest_level` by sorting: sorting the caps gives g at every breakpoint by cumulative
    sums; the answer lies on the first segment whose right end reaches `need`, where g is
    linear and solved in closed form."""
    d = cap.shape[1]
    cap_sorted, order = cap.sort(dim=1)
    w_sorted = weight.gather(1, order)
    reached = (w_sorted * cap_sorted).cumsum(1)  # sum over j <= k of weight_j cap_j
    slope_after = w_sorted.flip(1).cumsum(1).flip(1) - w_sorted  # sum over j > k of weight_j
    g_at_caps = reached + cap_sorted * slope_after
    k = (g_at_caps < need[:, None]).sum(1).clamp(max=d - 1)  # first breakpoint with g >= need
    k = k[:, None]
    prev = (k - 1).clamp(min=0)
    has_prev = k > 0
    reached_prev = torch.where(has_prev, reached.gather(1, prev), torch.zeros_like(need[:, None]))
    left = torch.where(has_prev, cap_sorted.gather(1, prev), torch.zeros_like(need[:, None]))
    right = cap_sorted.gather(1, k)
    slope = slope_after.gather(1, k) + w_sorted.gather(1, k)  # sum over j >= k: the segment's slope
    t = (need[:, None] - reached_prev) / slope.clamp_min(1e-30)
    t = torch.minimum(torch.maximum(t, left), right)  # rounding must not leave the segment
    return torch.where(need[:, None] > 0, t, torch.zeros_like(t)).squeeze(1)


def _toward_hyperplane(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """How to reach the hyperplane w.z + b = 0 from x (float64 rows): the sign of each
    coordinate's move (w's, flipped so that w.z grows toward the hyperplane), |w|, how much
    w.z must change, and the room each coordinate has in its direction inside [0, 1].

    Arithmetic only (products with 0 and 1 are exact): comparisons and torch.where on
    (N, D) tensors cost several times more on the CPU.
    """
    side = torch.linalg.vecdot(x, w) + b
    sign = torch.sign(w).mul_(torch.where(side > 0, -1.0, 1.0).to(w.dtype)[:, None])
    toward_one = sign.relu()  # 1 where the move is toward 1: room 1 - x, else room x
    room = (1 - x).mul_(toward_one).addcmul_(x, toward_one.neg_().add_(1)).clamp_min_(0)
    return sign, w.abs(), side.abs(), room


def project_onto_hyperplane_linf(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The point z of [0, 1]^D on the hyperplane w.z + b = 0 closest to x in L-inf.

    x, w: (N, D), b: (N,), x in [0, 1]; one hyperplane per row, from either side.
    Solves min ||z - x||_inf s.t. w.z + b = 0, 0 <= z <= 1. For a radius t the largest
    change of w.z within the box and the t-cube is sum_j |w_j| min(t, room_j) (move each
    coordinate by up to t in the sign of w, as far as the box allows), so the answer is the
    smallest t reaching the required change, and z_j = x_j + sign(w_j) min(t, room_j).
    If the box does not meet the hyperplane, returns the box point furthest toward it.
    """
    x64 = x.double()
    sign, magnitude, need, room = _toward_hyperplane(x64, w.double(), b.double())
    t = _smallest_level(magnitude, room, need)
    z = torch.minimum(room, t[:, None]).mul_(sign).add_(x64)
    return z.clamp_(0, 1).to(x.dtype)


def project_onto_hyperplane_l2(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The point z of [0, 1]^D on the hyperplane w.z + b = 0 closest to x in L2.

    x, w: (N, D), b: (N,), x in [0, 1]; one hyperplane per row, from either side.
    Solves min ||z - x||_2 s.t. w.z + b = 0, 0 <= z <= 1. The KKT conditions give
    z = x + clip(lambda w, -x, 1 - x) for a multiplier lambda >= 0 (after orienting w toward
    the hyperplane), and the change of w.z is sum_j w_j^2 min(lambda, room_j / |w_j|),
    non-decreasing in lambda: the same one-dimensional search as for L-inf with weights
    w_j^2 and caps room_j / |w_j|. Without the box this is x - (w.x + b) w / ||w||^2.
    If the box does not meet the hyperplane, returns the box point furthest toward it.
    """
    x64 = x.double()
    sign, magnitude, need, room = _toward_hyperplane(x64, w.double(), b.double())
    # coordinates with w_j = 0 cannot help: weight 0, and cap 0 avoids 0/0
    cap = room / magnitude.clamp_min(1e-300) * torch.sign(magnitude)  # <= 1e300; 0 where w_j = 0
    lam = _smallest_level(magnitude**2, cap, need)
    z = torch.minimum(room, lam[:, None] * magnitude).mul_(sign).add_(x64)
    return z.clamp_(0, 1).to(x.dtype)


PROJECTIONS = {"linf": project_onto_hyperplane_linf, "l2": project_onto_hyperplane_l2}


# ---------------------------------------------------------------- linearisation


def logit_difference_gradients(model: nn.Module, x: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor):
    """Values and input gradients of the logit differences f_plus - f_minus, per image.

    plus: (N, R) classes, minus: (N,) the class subtracted. Returns (logits (N, C),
    differences (N, R), gradients (N, R, *x.shape[1:])), all detached. One forward, then
    one vector-Jacobian product per row r through the same graph, with
    torch.autograd.grad(inputs=x) so nothing is written to the parameters' .grad.
    Images are independent (eval mode), so each image's row is its own gradient.
    """
    return _difference_gradients(model, x, lambda out: (plus, minus))


def _difference_gradients(model, x: torch.Tensor, classes):
    """`logit_difference_gradients` with (plus, minus) = classes(logits at x) chosen from the
    same forward pass that the gradients go through."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        plus, minus = classes(out.detach())
        rows = plus.shape[1]
        grads = []
        for r in range(rows):
            coeff = torch.zeros_like(out)
            coeff.scatter_(1, plus[:, r : r + 1], 1.0)
            coeff.scatter_add_(1, minus[:, None], -torch.ones_like(out[:, :1]))
            (g,) = torch.autograd.grad(out, x, grad_outputs=coeff, retain_graph=r < rows - 1)
            grads.append(g)
    out = out.detach()
    diffs = out.gather(1, plus) - out.gather(1, minus[:, None])
    return out, diffs, grads[0].unsqueeze(1) if rows == 1 else torch.stack(grads, 1)


def _other_classes(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C-1): for each image every class but y, in increasing order."""
    classes = torch.arange(num_classes, device=y.device).expand(y.shape[0], num_classes)
    return classes[classes != y[:, None]].view(y.shape[0], num_classes - 1)


def _dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """||g||_q over the pixel dimensions, q dual to the attack norm: the linearised distance
    to a hyperplane of normal g is |f| / ||g||_q."""
    flat = g.flatten(2)
    return flat.abs().sum(2) if norm == "linf" else flat.norm(dim=2)


def _linearised_boundary(model, xc, y, target, num_classes, norm):
    """The hyperplane w.z + b = 0 (w: (N, D), b: (N,)) that FAB projects onto at xc.

    Untargeted: among the boundaries f_l = f_y of every other class l, the one nearest to
    xc after linearisation (smallest |f_l - f_y| / ||grad (f_l - f_y)||_q).
    Targeted: the boundary between the target and the strongest other class at xc; it is
    the constraint that keeps xc from being classified as the target, and needs a single
    gradient instead of C-1.
    """
    n = xc.shape[0]

    def classes(out):
        if target is None:
            return _other_classes(y, num_classes), y
        # the strongest other class at xc, from the forward pass the gradient goes through
        return target[:, None], out.scatter(1, target[:, None], float("-inf")).argmax(1)

    _, diffs, grads = _difference_gradients(model, xc, classes)
    if grads.shape[1] == 1:  # targeted: a single boundary
        w, diff = grads[:, 0].flatten(1), diffs[:, 0]
    else:
        nearest = (diffs.abs() / (_dual_norm(grads, norm) + 1e-12)).argmin(1)
        idx = torch.arange(n, device=xc.device)
        w, diff = grads[idx, nearest].flatten(1), diffs[idx, nearest]
    # linearisation at xc: f(z) ~ f(xc) + w.(z - xc) = w.z + b
    b = diff - (w * xc.flatten(1)).sum(1)
    return w, b


# ---------------------------------------------------------------- the search


@dataclass(frozen=True)
class Search:
    """The settings every FAB run of one attack call shares.

    eps: None looks for the smallest adversarial; a radius makes an image done once it has one within eps.
    stop_within_eps (AutoAttack): such an image leaves a run at once, and the points are not re-checked on
    the whole batch (the caller confirms them)."""

    norm: str
    steps: int
    eps: float | None
    restarts: int
    generator: torch.Generator
    num_classes: int
    alpha_max: float = ALPHA_MAX
    eta: float = ETA
    beta: float = BETA
    stop_within_eps: bool = False

    @property
    def enough(self) -> float:
        """The norm at or below which an image needs no more search."""
        return self.eps if self.eps is not None else 0.0


def _biased_step(x0, xc, w, b, norm, alpha_max, eta):
    """One FAB step from xc: project xc and x0 onto the hyperplane, mix the two overshot
    projections with weight alpha on the original image's (the paper's biased gradient step)."""
    n = xc.shape[0]
    project = PROJECTIONS[norm]
    xc_flat, x0_flat = xc.flatten(1), x0.flatten(1)
    # both projections in one call: same hyperplane, two starting points
    z = project(torch.cat((xc_flat, x0_flat)), torch.cat((w, w)), torch.cat((b, b)))
    delta, delta0 = (z[:n] - xc_flat).view_as(xc), (z[n:] - x0_flat).view_as(xc)
    size, size0 = perturbation_norm(delta, norm), perturbation_norm(delta0, norm)
    # alpha grows when xc is far from the boundary compared with x0: pull back toward x0's projection
    alpha = per_image((size / (size + size0).clamp_min(1e-12)).clamp(max=alpha_max), xc)
    return ((1 - alpha) * (xc + eta * delta) + alpha * (x0 + eta * delta0)).clamp(0, 1)


def _single_run(model, x0, y, target, start, best_x, best_norm, search: Search):
    """`search.steps` FAB iterations from `start`; returns the updated per-image best point and norm.

    With search.stop_within_eps an image leaves the run once its best norm is <= eps (AutoAttack needs
    only some adversarial point within eps), so later iterations work on fewer images. Images are
    independent, so the others' iterations are unchanged.
    """
    stop = search.eps if search.stop_within_eps else None
    best_x, best_norm = best_x.clone(), best_norm.clone()
    rows = torch.arange(x0.shape[0], device=x0.device)
    if stop is not None:
        rows = (best_norm > stop).nonzero().squeeze(1)
    full = rows.numel() == x0.shape[0]
    xc, x0, y = start[rows], x0[rows], y[rows]
    target = target[rows] if target is not None else None
    bx, bn = best_x[rows], best_norm[rows]
    for _ in range(search.steps):
        if rows.numel() == 0:
            break
        w, b = _linearised_boundary(model, xc, y, target, search.num_classes, search.norm)
        xc = _biased_step(x0, xc, w, b, search.norm, search.alpha_max, search.eta)
        adv = fooled(forward(model, xc), y, target)
        size = perturbation_norm(xc - x0, search.norm)
        better = adv & (size < bn)
        bx = torch.where(per_image(better, xc), xc, bx)
        bn = torch.where(better, size, bn)
        # adversarial: step back toward x so the next approach of the boundary starts closer in
        xc = torch.where(per_image(adv, xc), x0 + search.beta * (xc - x0), xc)
        if stop is not None and (better & (bn <= stop)).any():
            done = bn <= stop
            best_x[rows[done]], best_norm[rows[done]] = bx[done], bn[done]
            keep = ~done
            rows, xc, x0, y, bx, bn = rows[keep], xc[keep], x0[keep], y[keep], bx[keep], bn[keep]
            target = target[keep] if target is not None else None
            full = False
    if full:
        return bx, bn
    best_x[rows], best_norm[rows] = bx, bn
    return best_x, best_norm


def _initial_norms(done: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """0 where x is already adversarial, +inf (nothing found yet) elsewhere."""
    inf = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
    return torch.where(done, torch.zeros_like(inf), inf)


def _search(model, x, y, target, clean: torch.Tensor, search: Search):
    """Per image the smallest adversarial point found and its norm (x and 0 where x is
    already adversarial, x and +inf where none was found). The model is in eval mode;
    `clean` is its output at x.

    Restarts run only on images they can help: with eps, those with no adversarial within
    eps yet; without, every image not already adversarial (a smaller one may exist).
    They start within half the best norm so far (capped by eps, or DEFAULT_START_RADIUS).
    """
    best_x, best_norm = x.clone(), _initial_norms(fooled(clean, y, target), x)
    for restart in range(search.restarts + 1):
        todo = (best_norm > search.enough).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        x0, y0 = x[todo], y[todo]
        t0 = target[todo] if target is not None else None
        if restart == 0:
            start = x0.clone()
        else:
            cap = search.eps if search.eps is not None else DEFAULT_START_RADIUS[search.norm]
            start = random_start(x0, 0.5 * best_norm[todo].clamp(max=cap), search.norm, search.generator)
        best_x[todo], best_norm[todo] = _single_run(model, x0, y0, t0, start, best_x[todo], best_norm[todo], search)
    if search.stop_within_eps:
        return best_x, best_norm
    return _verified(model, x, y, target, best_x, search.norm)


def _verified(model, x, y, target, best_x, norm):
    """Re-check the kept points on the whole batch (a point found right on the boundary could
    flip with a different batch composition); drop any that are not adversarial."""
    adv = fooled(forward(model, best_x), y, target)
    size = perturbation_norm(best_x - x, norm)
    best_x = torch.where(per_image(adv, x), best_x, x)
    return best_x, torch.where(adv, size, torch.full_like(size, math.inf))


# ---------------------------------------------------------------- shared by the public functions


def _checked(norm, steps, eps, restarts, x, y, seed):
    """The settings every public FAB function takes, checked, and the restarts' generator."""
    check_images(x, y)
    return (check_norm(norm), check_steps(steps), None if eps is None else check_eps(eps),
            check_int(restarts, "restarts", 0), make_generator(seed, x.device))


def _prepare(model, x, y, target):
    """Validate the labels against the model; returns (x detached, the model as the attack calls
    it (advlab.attacks._core.prepare_model), its output at x)."""
    x = x.detach()
    attacked, clean = prepare_model(model, x)
    check_classes_of(clean, y, target)
    return x, attacked, clean


def _threshold(x: torch.Tensor, best_x: torch.Tensor, best_norm: torch.Tensor, eps: float | None) -> torch.Tensor:
    """eps=None: every adversarial found. Else only those within eps, x elsewhere."""
    if eps is None:
        return best_x
    return torch.where(per_image(best_norm <= eps, x), best_x, x)


# ---------------------------------------------------------------- public API


def fab(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "linf",
    steps: int = 100,
    eps: float | None = None,
    restarts: int = 0,
    alpha_max: float = ALPHA_MAX,
    eta: float = ETA,
    beta: float = BETA,
    target=None,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """FAB: per image, the smallest (in `norm`) adversarial point found in [0, 1].

    Each of `steps` iterations projects the current point and x onto the nearest
    linearised decision boundary (box-constrained), steps to the alpha-weighted mix of the two
    projections overshot by eta (alpha <= alpha_max), and after every success steps back
    to x + beta (x_adv - x). `restarts` extra runs start at random points in a ball of half
    the best norm so far (capped by eps, or by DEFAULT_START_RADIUS without eps).

    eps=None returns the smallest adversarial found per image (x where none was found or
    x is already misclassified). With eps (AutoAttack usage) the adversarial point is
    returned only where its norm is <= eps, x elsewhere, so the result lies in the eps-ball.
    `target` (tensor or int): success means argmax == target, and images already classified
    as the target are returned unchanged. `seed`: the random restarts' generator or its seed
    (advlab.attacks._core.make_generator).
    """
    norm, steps, eps, restarts, generator = _checked(norm, steps, eps, restarts, x, y, seed)
    alpha_max = check_number(alpha_max, "alpha_max", 0.0, 1.0, what="a number")
    eta = check_number(eta, "eta", 1.0, what="a finite number", meaning="(the overshoot factor)")
    beta = check_number(beta, "beta", 0.0, 1.0, low_open=True, what="a number")
    target = check_target(y, target)
    if x.shape[0] == 0:
        return x.detach().clone()
    with eval_mode(model):
        x, attacked, clean = _prepare(model, x, y, target)
        search = Search(norm, steps, eps, restarts, generator, clean.shape[1], alpha_max, eta, beta)
        best_x, best_norm = _search(attacked, x, y, target, clean, search)
    return _threshold(x, best_x, best_norm, eps)


def fab_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "linf",
    steps: int = 100,
    eps: float | None = None,
    n_target_classes: int = N_TARGET_CLASSES,
    seed: int | torch.Generator = 0,
    restarts: int = 0,
) -> torch.Tensor:
    """FAB-T (AutoAttack's variant): targeted FAB toward each of the `n_target_classes`
    classes with the highest clean outputs other than y, keeping per image the smallest
    adversarial point over all targets. An untargeted attack: images already
    misclassified are returned unchanged.

    eps=None runs every target on every image (smallest norm wanted). With eps, a target
    is tried only on images with no adversarial within eps yet, and the result is
    thresholded as in `fab`. `restarts` and `seed` apply to each targeted run.
    """
    norm, steps, eps, restarts, generator = _checked(norm, steps, eps, restarts, x, y, seed)
    if x.shape[0] == 0:
        return x.detach().clone()
    with eval_mode(model):
        x, attacked, clean = _prepare(model, x, y, None)
        n_target_classes = check_n_target_classes(n_target_classes, clean.shape[1])
        search = Search(norm, steps, eps, restarts, generator, clean.shape[1])
        x_adv, _ = run_fab_targeted(attacked, x, y, clean, n_target_classes, search)
    return x_adv


def run_fab_targeted(attacked, x, y, clean, n_target_classes: int, search: Search):
    """FAB-T on x, given the model as the attacks call it (advlab.attacks._core.prepare_model) and its
    clean outputs; returns (points as `fab_targeted` returns them, per image whether an adversarial was
    found (within eps when search.eps is given))."""
    # the strongest competitors first: their boundaries are usually the closest
    targets = clean.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :n_target_classes]
    best_x, best_norm = x.clone(), _initial_norms(fooled(clean, y), x)
    for k in range(n_target_classes):
        todo = (best_norm > search.enough).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        bx, bn = _search(attacked, x[todo], y[todo], targets[todo, k], clean[todo], search)
        better = bn < best_norm[todo]
        best_x[todo] = torch.where(per_image(better, bx), bx, best_x[todo])
        best_norm[todo] = torch.where(better, bn, best_norm[todo])
    if not search.stop_within_eps:
        # a target reached is a misclassification; confirm it on the whole batch
        best_x, best_norm = _verified(attacked, x, y, None, best_x, search.norm)
    found = best_norm <= search.eps if search.eps is not None else best_norm < math.inf
    return _threshold(x, best_x, best_norm, search.eps), found


def minimal_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 0,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """(N,) norm of the smallest adversarial perturbation FAB finds per image: 0 where x is
    already misclassified, +inf where none was found.

    These are upper bounds on the true minimal norms: an image whose true minimal
    adversarial is smaller than FAB's may be counted robust at eps where it is not.
    """
    norm, steps, _, restarts, generator = _checked(norm, steps, None, restarts, x, y, seed)
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=x.dtype, device=x.device)
    with eval_mode(model):
        x, attacked, clean = _prepare(model, x, y, None)
        search = Search(norm, steps, None, restarts, generator, clean.shape[1])
        _, best_norm = _search(attacked, x, y, None, clean, search)
    return best_norm


def accuracy_curve(norms: torch.Tensor, eps_list) -> list[float]:
    """Robust accuracy at each eps: the fraction of images whose minimal adversarial norm
    exceeds eps (0 = misclassified counts as not robust at any eps >= 0).

    From `minimal_norms` this is the whole accuracy-vs-eps curve from a single attack, an
    upper bound on the true robust accuracy (the norms are upper bounds). Non-increasing in eps.
    """
    if not torch.is_tensor(norms) or norms.dim() != 1 or norms.numel() == 0:
        raise ValueError("norms must be a non-empty 1-D tensor of per-image norms (from minimal_norms)")
    if norms.isnan().any() or (norms < 0).any():
        raise ValueError("norms must be >= 0 (or +inf where no adversarial was found)")
    return [(norms > check_eps(e, "eps_list entries")).float().mean().item() for e in eps_list]
