"""`python -m advlab.attacks`: every registered attack, what it supports and its settings with their defaults."""

from advlab.attacks.registry import SPECS


def describe() -> str:
    lines = []
    for spec in SPECS.values():
        kinds = [k for k, on in (("targeted", spec.targeted), ("iterative", spec.iterative),
                                 ("white-box", spec.gradients), ("black-box", not spec.gradients),
                                 ("randomised", spec.randomised), ("leaves the ball", not spec.bounded)) if on]
        lines.append(f"{spec.name:<13} {spec.summary}  [{', '.join(kinds)}; norms: {', '.join(spec.norms)}]")
        lines += [f"{'':<15}{k}: {v!r}" for k, v in spec.settings.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
