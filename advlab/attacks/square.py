"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), a score-based black-box attack.

Random search on the margin loss that looks only at the model's outputs (no gradient is
ever computed, so gradient masking cannot hide a weakness from it). Per image it keeps the
best point x_best found so far and, at each iteration, proposes a change of x_best inside
one random square window of side s; the proposal is kept only if the margin improves:

    x_new = Proj_{B(x, eps) and [0,1]}(x + delta_new),  x_best <- x_new if m(x_new) > m(x_best).

The window covers a fraction p of the image (s = round(sqrt(p H W))); p starts at p_init
and halves at fixed points of the query budget (the reference schedule, written for
10000 queries and rescaled to the budget), so the search goes from coarse to fine.

L-inf: the start is vertical stripes of +-eps (one sign per column and channel); a proposal
sets the window, per channel, to one random value in {-eps, +eps}. Those are the vertices
of the ball, where the optimum of the linearised problem lies.

L2: the start is a grid of "meta patterns" (two adjacent opposite-signed pseudo-Gaussian
bumps) rescaled to norm eps. A proposal takes the perturbation out of two windows, puts
a new pattern with random per-channel sign in the first (on top of what was there), gives
it the energy of both windows plus whatever the [0, 1] clipping left unused, and rescales
the whole perturbation back to norm eps.

An image stops being queried as soon as it is fooled (untargeted: the prediction is not y;
targeted: it is the target); the search ends when all are fooled or the budget is spent.
"""

import math

import torch
from torch import nn

from advlab.attacks._core import (check_classes_of, check_eps, check_images, check_int, check_norm,
                                 check_number, check_target, eval_mode, fooled, make_generator, per_image,
                                 prepare_model, project)
from advlab.attacks.losses import margin

P_INIT = 0.8  # the share of the image the first windows cover: the paper's and AutoAttack's setting
# The reference p schedule for a budget of 10000 queries: after iteration `bound` the window
# fraction is p_init / divisor (and p_init / 512 past the last bound).
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
_P_LAST_DIVISOR = 512
_REFERENCE_BUDGET = 10000
# An L-inf proposal that clipping to [0, 1] maps back onto x_best wastes a query, so its signs are
# redrawn; bounded, because near-saturated windows may need many draws and a wasted query is harmless.
_REDRAWS = 10


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", queries: int = 5000,
           p_init: float = P_INIT, target=None, seed: int | torch.Generator = 0) -> torch.Tensor:
    """Square Attack on a batch of images (N, C, H, W) in [0, 1]; returns the adversarial images.

    queries: the most perturbed points evaluated per image (the start counts as one), on top of
    one clean prediction that leaves images the model already gets wrong untouched.
    p_init: the fraction of the image the first windows cover, in (0, 1].
    target: a class (int or one per image) to push toward instead of away from y.
    seed: all randomness comes from this generator, or one on x's device seeded with it
    (advlab.attacks._core.make_generator); the global random state is not touched.
    Images that are never fooled come back at the best (highest-margin) point found.
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    queries = check_int(queries, "queries", 1)
    p_init = check_number(p_init, "p_init", 0, 1, low_open=True, what="a fraction of the image")
    check_images(x, y)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W) for Square's windows, got shape {tuple(x.shape)}")
    target = check_target(y, target)
    x = x.detach()
    gen = make_generator(seed, x.device)

    with eval_mode(model):
        attacked, out = prepare_model(model, x)
        check_classes_of(out, y, target)
        x_adv, _ = run_square(attacked, x, y, out, eps, norm, queries, p_init, target, gen)
    return x_adv


def run_square(attacked, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, eps: float, norm: str, queries: int,
               p_init: float, target: torch.Tensor | None, gen: torch.Generator):
    """Square on x, given the model as the attacks call it (advlab.attacks._core.prepare_model) and its
    clean outputs; returns (points, fooled per image)."""
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W) for Square's windows, got shape {tuple(x.shape)}")
    x_adv = x.clone()
    hit = fooled(clean, y, target)
    todo = (~hit).nonzero().squeeze(1)
    if eps == 0 or todo.numel() == 0:
        return x_adv, hit
    sub_target = target[todo] if target is not None else None
    with torch.no_grad():
        x_adv[todo], hit[todo] = _search(attacked, x[todo], y[todo], sub_target, eps, norm, queries, p_init, gen)
    return x_adv, hit


# ---------------------------------------------------------------- the random search


def _search(model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, eps: float,
            norm: str, queries: int, p_init: float, gen: torch.Generator):
    """Random search from the norm's start, querying only the images not yet fooled.

    Returns (x_best, fooled). The images still searched are kept as compact working copies,
    rebuilt only when some are fooled (not gathered from the full batch at every query).
    """
    start = _linf_start if norm == "linf" else _l2_start
    x_best = project(x + start(x, eps, gen), x, eps, norm)
    out = model(x_best)
    loss = margin(out, y, target)
    done = fooled(out, y, target)

    # L-inf: the working copies in the model's memory format, so that proposals need no conversion
    # (elementwise arithmetic, the same values in any format)
    layout = getattr(model, "layout", None) if norm == "linf" else None
    active = (~done).nonzero().squeeze(1)
    xa, best, ya, la = x[active], x_best[active], y[active], loss[active]
    if layout is not None:
        xa, best = layout(xa), layout(best)
    ta = target[active] if target is not None else None
    bounds = _linf_bounds(xa, eps) if norm == "linf" else None
    for it in range(1, queries):
        if active.numel() == 0:
            break
        p = _p_schedule(it, queries, p_init)
        if norm == "linf":
            candidate = _linf_proposal(xa, best, eps, p, gen, bounds)
        else:
            candidate = _l2_proposal(xa, best, eps, p, gen)
        out = model(candidate)
        new_loss = margin(out, ya, ta)
        better = new_loss > la
        if not better.any():
            continue
        best = torch.where(per_image(better, best), candidate, best)
        la = torch.where(better, new_loss, la)
        hit = better & fooled(out, ya, ta)
        if hit.any():
            x_best[active] = best
            done[active[hit]] = True
            keep = ~hit
            active, xa, best, ya, la = active[keep], xa[keep], best[keep], ya[keep], la[keep]
            ta = ta[keep] if ta is not None else None
            bounds = tuple(b[keep] for b in bounds) if bounds is not None else None
    x_best[active] = best
    return x_best, done


def _p_schedule(it: int, queries: int, p_init: float) -> float:
    """Window fraction at iteration `it`: the reference's 10000-query schedule, stretched to `queries`."""
    it = int(it / queries * _REFERENCE_BUDGET)
    for bound, divisor in _P_SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / _P_LAST_DIVISOR


def _random_signs(shape: tuple, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Independent +-1 values, with the dtype of `like`."""
    bits = torch.randint(0, 2, shape, generator=gen, device=gen.device)
    return (2 * bits - 1).to(like.dtype)


def _window(h: int, w: int, side: int, gen: torch.Generator) -> tuple:
    """Index of a uniformly placed side x side window (the same for every image, as in the reference)."""
    top = int(torch.randint(0, h - side + 1, (1,), generator=gen, device=gen.device))
    left = int(torch.randint(0, w - side + 1, (1,), generator=gen, device=gen.device))
    return (..., slice(top, top + side), slice(left, left + side))


# ---------------------------------------------------------------- L-inf


def _linf_start(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Vertical stripes: one +-eps value per image, channel and column."""
    n, c, _, w = x.shape
    return eps * _random_signs((n, c, 1, w), gen, x).expand_as(x)


def _linf_side(p: float, h: int, w: int) -> int:
    # At most min(H, W) - 1 (as the reference), so windows can still move, but at least one pixel.
    return max(min(round(math.sqrt(p * h * w)), min(h, w) - 1), 1)


def _linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The box that L-inf projection then clipping to [0, 1] clamps to: [max(x - eps, 0), min(x + eps, 1)]
    (clamping to it gives exactly project(., x, eps, "linf"), with no arithmetic)."""
    return (x - eps).clamp_min(0.0), (x + eps).clamp_max(1.0)


def _linf_proposal(x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float,
                   gen: torch.Generator, bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x_best with one window set, per image and channel, to x + eps or x - eps.
    bounds: `_linf_bounds(x, eps)`, if the caller keeps them across proposals."""
    n, c, h, w = x.shape
    win = _window(h, w, _linf_side(p, h, w), gen)
    values = eps * _random_signs((n, c, 1, 1), gen, x)
    x_win, best_win = x[win], x_best[win]
    for _ in range(_REDRAWS):
        unchanged = ((x_win + values).clamp(0, 1) - best_win).abs().flatten(1).sum(1) < 1e-7
        if not unchanged.any():
            break
        values[unchanged] = eps * _random_signs((int(unchanged.sum()), c, 1, 1), gen, x)
    delta = x_best - x
    delta[win] = values  # broadcast over the window
    if bounds is None:
        return project(x + delta, x, eps, "linf")
    return torch.clamp(x + delta, *bounds)


# ---------------------------------------------------------------- L2


def _l2_side(p: float, h: int, w: int) -> int:
    # Odd and at least 3, so the meta pattern has a centre and two halves; no larger than the image.
    side = max(round(math.sqrt(p * h * w)), 3)
    side += 1 - side % 2
    return min(side, h, w)


def _bump(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """A pseudo-Gaussian rectangle of unit L2 norm: nested rectangles around the centre, ring k
    (Chebyshev distance k from the centre) adding 1 / (k + 1)^2 to everything inside it."""
    if rows == 0 or cols == 0:
        return like.new_zeros(rows, cols)
    r = (torch.arange(rows, device=like.device) - rows // 2).abs()
    c = (torch.arange(cols, device=like.device) - cols // 2).abs()
    dist = torch.maximum(r[:, None], c[None, :])
    rings = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, rings + 1, device=like.device, dtype=like.dtype) ** 2
    # The value at distance d sums the weights of every ring k >= d.
    tail = weights.flip(0).cumsum(0).flip(0)
    bump = tail[dist]
    return bump / bump.norm()


def _meta_pattern(side: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Two bumps of opposite sign side by side (unit L2 norm), vertical or horizontal at random."""
    half = side // 2
    pattern = torch.cat([_bump(half, side, like), -_bump(side - half, side, like)], 0)
    pattern = pattern / pattern.norm().clamp_min(1e-12)
    if torch.rand((), generator=gen, device=gen.device) < 0.5:
        pattern = pattern.t()
    return pattern


def _channel_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm over each image's each channel's pixels, shape (N, C, 1, 1)."""
    return t.pow(2).sum((-2, -1), keepdim=True).sqrt()


def _image_norm(t: torch.Tensor) -> torch.Tensor:
    return per_image(t.flatten(1).norm(dim=1), t)


def _rescale(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _image_norm(delta).clamp_min(1e-12))


def _l2_start(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A centred grid of meta patterns (tiles of side min(H, W) // 5) with random per-image,
    per-channel signs, rescaled to norm eps."""
    n, c, h, w = x.shape
    side = max(min(h, w) // 5, 1)
    delta = torch.zeros_like(x)
    top0, left0 = (h - side * (h // side)) // 2, (w - side * (w // side)) // 2
    for top in range(top0, top0 + side * (h // side), side):
        for left in range(left0, left0 + side * (w // side), side):
            signs = _random_signs((n, c, 1, 1), gen, x)
            delta[..., top:top + side, left:left + side] = _meta_pattern(side, gen, x) * signs
    return _rescale(delta, eps)


def _l2_proposal(x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float,
                 gen: torch.Generator) -> torch.Tensor:
    """Move the perturbation of two random windows into the first one, as a new meta pattern
    added to the first window's old (unit-normalised) content, then rescale to norm eps."""
    n, c, h, w = x.shape
    side = _l2_side(p, h, w)
    win1, win2 = _window(h, w, side, gen), _window(h, w, side, gen)
    delta = x_best - x  # a new tensor: edited in place below

    in_windows = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
    in_windows[win1] = 1
    in_windows[win2] = 1
    # Energy per channel that the new window gets: what both windows held, plus an equal share of
    # the budget that clipping to [0, 1] left unused (so the norm can grow back to eps).
    unused = (eps ** 2 - _image_norm(delta) ** 2).clamp_min(0) / c
    energy = unused + _channel_norm(delta * in_windows) ** 2

    old = delta[win1]
    new = _meta_pattern(side, gen, x) * _random_signs((n, c, 1, 1), gen, x)
    new = new + old / (_channel_norm(old) + 1e-12)
    new = new / (_channel_norm(new) + 1e-12) * energy.sqrt()

    delta[win2] = 0
    delta[win1] = new
    return project(x + _rescale(delta, eps), x, eps, "l2")
