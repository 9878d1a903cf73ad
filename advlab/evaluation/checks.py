"""Sanity checks that catch a robustness number that is too good to be true.

After Carlini et al. 2019, "On Evaluating Adversarial Robustness". Each check reports
PASS or WARN (or SKIP when the evaluation lacks what it needs) with the numbers
behind it. A WARN does not change any accuracy: it says the number may be an
artefact of the attack (weak or masked gradients), not robustness.

1. monotone      robust accuracy never rises as eps grows
2. large_eps     a large enough eps drives accuracy to chance or below
3. iterative     iterative attacks are at least as strong as single-step ones
4. black_box     the black-box Square attack is not stronger than the white-box attacks
5. convergence   more steps and restarts no longer change the number
6. label_leaking perturbed accuracy (FGSM on every image) is not above clean accuracy
7. transfer      another model's adversarial examples (evaluation.transfer_from) break no more images than
                 the white-box attacks (advlab.evaluation.transfer)
"""

import torch
from torch import nn

from advlab.attacks.pgd import pgd
from advlab.attacks.square import square
from advlab.evaluation.robustness import infer_num_classes, predict
from advlab.results import CHECK_NAMES, WORST_CASE, Check, Results
from advlab.stats import Rate

# The radius at which a working attack must drive accuracy to chance, per norm (images in [0, 1]).
LARGE_EPS = {"linf": 0.5, "l2": 10.0}


def _pct(successes: int, n: int) -> float:
    return round(100 * successes / n, 2) if n else float("nan")


def _p(rate: Rate) -> float:
    return _pct(rate.successes, rate.n)


def check_monotone(results: Results) -> Check:
    rob = results.robustness
    rises = []
    for attack, rates in rob.rates.items():
        for (e0, r0), (e1, r1) in zip(zip(rob.eps, rates), list(zip(rob.eps, rates))[1:]):
            if r1.successes > r0.successes:
                rises.append(f"{attack}: {_p(r0)}% at eps={e0:g} -> {_p(r1)}% at eps={e1:g}")
    if rises:
        return Check("monotone", "WARN", "accuracy rises with eps (a weak or masked attack): " + "; ".join(rises),
                     {"rises": rises})
    return Check("monotone", "PASS", "robust accuracy never rises as eps grows")


def check_iterative(results: Results, iterative: list[str]) -> Check:
    """iterative: the evaluated attacks that take many steps (each attack says whether it does)."""
    acc = results.robustness.rates
    iterative = [a for a in iterative if a in acc]
    if "fgsm" not in acc or not iterative:
        return Check("iterative", "SKIP", "needs FGSM and an iterative attack evaluated per attack")
    bad = []
    for name in iterative:
        for e, it, one in zip(results.eps, acc[name], acc["fgsm"]):
            if it.successes > one.successes:
                bad.append(f"{name} {_p(it)}% > fgsm {_p(one)}% at eps={e:g}")
    if bad:
        return Check("iterative", "WARN", "an iterative attack is weaker than FGSM (gradient masking or a "
                     "too-small step): " + "; ".join(bad), {"violations": bad})
    return Check("iterative", "PASS", "iterative attacks are at least as strong as FGSM at every eps")


def check_label_leaking(results: Results) -> Check:
    if results.perturbed is None:
        return Check("label_leaking", "SKIP", "FGSM-perturbed accuracy is measured for L-inf evaluations only")
    clean = results.clean
    perturbed = results.perturbed.by_eps("fgsm")
    above = [(e, r) for e, r in perturbed.items() if e > 0 and r.successes > clean.successes]
    numbers = {"clean": _p(clean), "perturbed": {f"{e:g}": _p(r) for e, r in perturbed.items()}}
    if above:
        worst = ", ".join(f"{_p(r)}% at eps={e:g}" for e, r in above)
        return Check("label_leaking", "WARN", f"accuracy on FGSM-perturbed images ({worst}) is above clean "
                     f"accuracy ({numbers['clean']}%): the model reads the label from the perturbation", numbers)
    return Check("label_leaking", "PASS", "FGSM-perturbed accuracy never exceeds clean accuracy", numbers)


def check_eps_for_sample(results: Results) -> float | None:
    """The eps whose worst-case accuracy is closest to half the clean accuracy: where a
    stronger attack has the most room to show."""
    clean = results.clean.value
    candidates = [(abs(r.value - clean / 2), e) for e, r in results.robustness.by_eps(WORST_CASE).items() if e > 0]
    return min(candidates)[1] if candidates else None


def _accuracy(model, x, y) -> int:
    return int((predict(model, x) == y).sum())


def check_large_eps(model: nn.Module, x, y, norm: str, large_eps: float, num_classes: int | None = None) -> Check:
    """PGD at a huge eps must bring accuracy down to chance (1 / num_classes; None: the model's outputs)."""
    if num_classes is None:
        num_classes = infer_num_classes(model, x)
    x_adv = pgd(model, x, y, large_eps, steps=20, norm=norm)
    correct = _accuracy(model, x_adv, y)
    acc, chance = _pct(correct, len(y)), round(100 / num_classes, 2)
    numbers = {"eps": large_eps, "accuracy": acc, "chance": chance, "n": len(y)}
    if acc > chance:
        return Check("large_eps", "WARN", f"PGD at eps={large_eps:g} leaves {acc}% accuracy, above chance "
                     f"({chance}%): gradients do not lead the attack (masking or obfuscation)", numbers)
    return Check("large_eps", "PASS", f"PGD at eps={large_eps:g} drives accuracy to {acc}% (chance {chance}%)",
                 numbers)


def check_convergence(model, x, y, eps: float, norm: str, steps: int, seed: int,
                      trace: dict | None = None) -> Check:
    """PGD with the evaluation's steps versus twice the steps and 5 random restarts; and, given the
    convergence trace (advlab.evaluation.convergence), whether a curve was still falling at its last step."""
    base = _accuracy(model, pgd(model, x, y, eps, steps=steps, norm=norm), y)
    strong = _accuracy(model, pgd(model, x, y, eps, steps=2 * steps, norm=norm, restarts=5, seed=seed), y)
    numbers = {"eps": eps, "n": len(y), f"pgd_{steps}": _pct(base, len(y)),
               f"pgd_{2 * steps}_x5_restarts": _pct(strong, len(y))}
    falling = [name for name, a in (trace or {}).get("attacks", {}).items() if a["still_falling"]]
    if trace:
        numbers["still_falling"] = falling
    tolerance = max(1, round(0.01 * len(y)))
    if base - strong > tolerance:
        return Check("convergence", "WARN", f"more steps and restarts lower accuracy at eps={eps:g} from "
                     f"{numbers[f'pgd_{steps}']}% to {numbers[f'pgd_{2 * steps}_x5_restarts']}%: the attack "
                     "had not converged, the reported number is too high", numbers)
    if falling:
        return Check("convergence", "WARN", f"the margin of the images still robust was still falling at the "
                     f"last step of {', '.join(falling)} at eps={trace['eps']:g}: more steps would lower "
                     "the reported number", numbers)
    return Check("convergence", "PASS", f"2x steps and 5 restarts change PGD accuracy at eps={eps:g} by "
                 f"{_pct(base - strong, len(y))} points (<= {_pct(tolerance, len(y))})", numbers)


def check_black_box(model, x, y, eps: float, norm: str, steps: int, queries: int, seed: int) -> Check:
    white = _accuracy(model, pgd(model, x, y, eps, steps=steps, norm=norm), y)
    black = _accuracy(model, square(model, x, y, eps, norm=norm, queries=queries, seed=seed), y)
    numbers = {"eps": eps, "n": len(y), "pgd": _pct(white, len(y)), "square": _pct(black, len(y)),
               "square_queries": queries}
    tolerance = max(1, round(0.01 * len(y)))
    if white - black > tolerance:
        return Check("black_box", "WARN", f"black-box Square ({numbers['square']}%) beats white-box PGD "
                     f"({numbers['pgd']}%) at eps={eps:g}: the gradients are misleading (masking)", numbers)
    return Check("black_box", "PASS", f"Square {numbers['square']}% vs PGD {numbers['pgd']}% at eps={eps:g}",
                 numbers)


def run_checks(model: nn.Module, results: Results, x: torch.Tensor, y: torch.Tensor, iterative: list[str],
               norm: str = "linf", large_eps: float | None = None, pgd_steps: int = 30, square_queries: int = 1000,
               seed: int = 0, num_classes: int | None = None, trace: dict | None = None) -> list[Check]:
    """The six checks, in CHECK_NAMES order (the transfer check runs with a transfer attack: the pipeline). x, y: a sample of test images (in [0, 1], on the model's
    device) for the checks that run attacks of their own (2, 4, 5). large_eps None: LARGE_EPS[norm].
    trace: the convergence trace, if one was taken (the convergence check reads it)."""
    large_eps = LARGE_EPS[norm] if large_eps is None else large_eps
    checks = [check_monotone(results), check_large_eps(model, x, y, norm, large_eps, num_classes),
              check_iterative(results, iterative)]
    eps = check_eps_for_sample(results)
    if eps is None:
        skip = "needs an eps > 0 in the evaluation"
        checks += [Check("black_box", "SKIP", skip), Check("convergence", "SKIP", skip)]
    else:
        checks.append(check_black_box(model, x, y, eps, norm, pgd_steps, square_queries, seed))
        checks.append(check_convergence(model, x, y, eps, norm, pgd_steps, seed, trace))
    checks.append(check_label_leaking(results))
    return sorted(checks, key=lambda c: CHECK_NAMES.index(c.name))
