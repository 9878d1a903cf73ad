"""The registry's constructor of a purification defense: a classifier behind a VAE purifier
(advlab.defenses.purification), from plain arguments, so a checkpoint can rebuild it by name."""

from advlab.defenses.purification import ConvVAE, Purified
from advlab.models.registry import build_model


def build_purified(classifier: dict | None = None, latent_dim: int = 128, width: int = 32, beta: float = 1.0,
                   sample: bool = True, quantize: bool = False, image_size=(32, 32)) -> Purified:
    """The registry's constructor: plain arguments only, so a checkpoint can rebuild it by name.

    classifier: build_model's arguments for the classifier behind the purifier.
    image_size: the images' [height, width] (multiples of 8), for the VAE.
    """
    classifier = dict(classifier or {"name": "seed_cnn"})
    if "name" not in classifier:
        raise ValueError(f"classifier must name a registered model (a 'name' key), got {classifier}")
    return Purified(ConvVAE(latent_dim, width, image_size), build_model(**classifier), beta=beta, sample=sample,
                    quantize=quantize)
