"""OmegaConf resolvers the configs use, registered when advlab is imported (before Hydra resolves anything).

    eps: ${div:8,255}                      # radii as the fractions they are: 8/255, 36/255
    attacks: ${advlab:default_attacks}     # a fact written once in Python (advlab.evaluation.settings)
    num_classes: ${dataset:${.dataset},num_classes}   # a dataset's fact (advlab.data.datasets; npz: null)

`advlab:NAME` returns one of FACTS and `dataset:NAME,KEY` one of a dataset's metadata, so a config and
the Python code read the same definition.
"""

from omegaconf import OmegaConf


def _default_attacks() -> list:
    from advlab.evaluation.settings import DEFAULT_ATTACKS  # on use: importing advlab stays light

    return OmegaConf.create(list(DEFAULT_ATTACKS))  # a ListConfig: OmegaConf.resolve refuses a plain list


FACTS = {"default_attacks": _default_attacks}


def _fact(name: str):
    if name not in FACTS:
        raise ValueError(f"${{advlab:{name}}}: unknown fact; known: {', '.join(FACTS)}")
    return FACTS[name]()


def _dataset(name: str, key: str):
    from advlab.data.datasets import metadata

    value = metadata(name, key)
    return OmegaConf.create(value) if isinstance(value, list) else value  # a ListConfig, as for default_attacks


def _div(numerator, denominator) -> float:
    return float(numerator) / float(denominator)


def register() -> None:
    """Register the resolvers (again is a no-op)."""
    for name, fn in (("div", _div), ("advlab", _fact), ("dataset", _dataset)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
