"""optimized_metric: the number a run hands to a Hydra sweeper (Optuna) as its objective.

    optimized_metric: worst_case@0.03                      # worst-case robust accuracy at eps 0.03
    optimized_metric: clean                                # clean accuracy
    optimized_metric: robust:pgd@0.01                      # one attack's accuracy at an eps
    optimized_metric: {clean: 0.5, worst_case@0.03: 0.5}   # a weighted sum of the above (a score)

Accuracies are fractions in [0, 1]. Every eps must be one of evaluation.eps, every attack one of
evaluation.attacks (with evaluation.per_attack=true); check_metric refuses anything else before
any work. null (the default): the run returns its Results, as before.
"""

import math
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from advlab.results import WORST_CASE, Results

KEY = "optimized_metric"
FORMS = ("clean | worst_case@EPS | robust:ATTACK@EPS, or a weighted score {TERM: WEIGHT, ...} "
         "(e.g. {clean: 0.5, worst_case@0.03: 0.5})")


def _error(message: str) -> ValueError:
    return ValueError(f"{KEY}: {message}; allowed: {FORMS}")


def _term(text) -> tuple[str, str | None, float | None]:
    """("clean", None, None), ("worst_case", None, eps) or ("robust", attack, eps) from one term."""
    if not isinstance(text, str) or not text.strip():
        raise _error(f"{text!r} is not a metric")
    text = text.strip()
    if text == "clean":
        return "clean", None, None
    name, at, eps_text = text.rpartition("@")
    try:
        eps = float(eps_text)
    except ValueError:
        eps = None
    if not at or eps is None or not math.isfinite(eps) or eps < 0:
        raise _error(f"{text!r}: give the eps after '@', e.g. worst_case@0.03")
    if name == WORST_CASE:
        return WORST_CASE, None, eps
    if name.startswith("robust:") and name[len("robust:"):].strip():
        return "robust", name[len("robust:"):].strip(), eps
    raise _error(f"{text!r} is not a metric")


def parse_metric(spec) -> list[tuple[float, tuple]]:
    """[(weight, term), ...] of an optimized_metric value (one term of weight 1, or a weighted score)."""
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, str):
        return [(1.0, _term(spec))]
    if isinstance(spec, Mapping):
        if not spec:
            raise _error("an empty score")
        terms = []
        for text, weight in spec.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise _error(f"the weight of {text!r} must be a number, got {weight!r}")
            terms.append((float(weight), _term(text)))
        return terms
    raise _error(f"got {spec!r}")


def check_metric(cfg: DictConfig, attack_names) -> None:
    """Refuse an optimized_metric the run cannot compute (its eps or attack not evaluated), naming the key."""
    spec = cfg.get(KEY)
    if spec is None:
        return
    terms = parse_metric(spec)
    if cfg.get("task", "experiment") != "experiment":
        raise ValueError(f"{KEY}: only task=experiment returns a metric (task={cfg.task})")
    evaluated = [float(e) for e in cfg.evaluation.eps]
    for _, (kind, attack, eps) in terms:
        if eps is not None and not any(math.isclose(eps, e, rel_tol=1e-9, abs_tol=1e-12) for e in evaluated):
            raise ValueError(f"{KEY}: eps={eps:g} is not evaluated; evaluation.eps is "
                             f"[{', '.join(f'{e:g}' for e in evaluated)}]")
        if kind == "robust":
            if not cfg.evaluation.get("per_attack", True):
                raise ValueError(f"{KEY}: robust:{attack}@{eps:g} needs evaluation.per_attack=true "
                                 f"(or use worst_case@{eps:g})")
            if attack not in attack_names:
                raise ValueError(f"{KEY}: attack {attack!r} is not evaluated; evaluation.attacks has "
                                 f"{sorted(attack_names)}")


def metric_value(spec, results: Results) -> float:
    """The optimized_metric of results: a weighted sum of its terms."""
    total = 0.0
    for weight, (kind, attack, eps) in parse_metric(spec):
        rate = results.clean if kind == "clean" else \
            results.worst_case(eps) if kind == WORST_CASE else results.robust(attack, eps)
        total += weight * rate.value
    return float(total)
