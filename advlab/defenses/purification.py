"""Purification by a variational autoencoder: the classifier sees the VAE's reconstruction.

The hope behind the defense is that an adversarial perturbation is off the data
manifold and that encoding to a small latent code and decoding removes it. The
defense has two features that make a naive evaluation overstate its robustness,
and both are attacked in advlab.attacks.adaptive:
- randomness: the code is sampled, z ~ q(z|x), at every forward pass (`sample`);
  a single-sample gradient is noisy, so the adaptive attack takes the expectation
  over the noise (EOT);
- an optional 8-bit quantisation of the reconstruction (`quantize`), whose true
  gradient is zero almost everywhere; the adaptive attack differentiates it as the
  identity (BPDA) by switching on the model's `bpda` flag.

    vae = ConvVAE(latent_dim=128, width=32)
    model = Purified(vae, classifier)     # model(x) = classifier(purify(x))
    loss = F.cross_entropy(model(x), y) + model.extra_loss(x)   # one training step trains both
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks._core import check_int
from advlab.attacks.adaptive import BPDA

IMAGE_SHAPE = (3, 32, 32)  # the default: CIFAR-10's images


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta (weight of the KL term) must be a finite number >= 0, got {beta}")
    return beta


class ConvVAE(nn.Module):
    """A convolutional VAE on 3 x H x W images in [0, 1] (32x32 by default; `image_size`:
    any multiples of 8).

    Encoder: three stride-2 convolutions (32 -> 16 -> 8 -> 4 on 32x32 images) of width, 2 width
    and 4 width channels, then a linear layer to the Gaussian posterior's mean and log
    variance. Decoder: the mirror image with transposed convolutions, ending in a
    sigmoid. No batch-norm, so the purifier computes the same function in train and
    eval mode and an attack sees exactly the deployed function.
    """

    def __init__(self, latent_dim: int = 128, width: int = 32, image_size=IMAGE_SHAPE[1:]):
        super().__init__()
        from advlab.models.normalize import image_size as check_image_size  # models imports this module

        self.latent_dim = check_int(latent_dim, "latent_dim", 1)
        w = check_int(width, "width", 1)
        h8, w8 = (s // 8 for s in check_image_size(image_size, multiple=8))
        self.image_shape = (3, 8 * h8, 8 * w8)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * w * h8 * w8, 2 * self.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_dim, 4 * w * h8 * w8), nn.ReLU(), nn.Unflatten(1, (4 * w, h8, w8)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of q(z|x), each (N, latent_dim)."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must be images of shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """The reconstruction of x, from a sampled code (sample=True) or from the posterior mean."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar) if sample else mu)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * noise: a sample of N(mu, sigma^2) that is differentiable in mu and sigma."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def elbo_loss(vae: ConvVAE, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Negative ELBO (with the KL term weighted by beta), in nats per pixel value, batch mean.

    Reconstruction term: per-pixel binary cross-entropy between x and the decoder's
    Bernoulli means. Images in [0, 1] are not binary, so this is not a normalised
    likelihood (its minimum is the pixels' own entropy, not 0), but it is the usual
    choice for [0, 1] data: it needs no noise scale, whereas a Gaussian likelihood
    with a fixed variance sigma^2 is MSE / (2 sigma^2), and sigma would be one more
    knob trading reconstruction against the KL term, the job beta already does.

    Dividing by the 3072 pixel values changes no optimum; it keeps the loss near 1
    rather than near 2000, so that it can share one optimiser and learning rate with
    the classifier's cross-entropy (Purified.extra_loss).
    """
    beta = _check_beta(beta)
    mu, logvar = vae.encode(x)
    logits = vae.decode_logits(reparameterize(mu, logvar))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return ((recon + beta * kl) / x[0].numel()).mean()


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images in [0, 1] to the nearest multiple of 1/255. Its gradient is zero almost everywhere."""
    return torch.round(x * 255) / 255


# The same step, differentiated as the identity (used only while `bpda` is on).
_QUANTIZE_BPDA = BPDA(quantize_8bit)


class Purified(nn.Module):
    """classifier(purify(x)): a classifier behind a VAE purifier.

    sample: the code is drawn from q(z|x) at every forward pass, in eval mode too
        (the defense's randomness); False uses the posterior mean (deterministic).
    quantize: round the reconstruction to 8 bits (not differentiable).
    bpda: differentiate the quantisation as the identity. Predictions are the same
        either way; only gradients change. Off by default, so that the deployed model
        shows the masked (zero) gradient a naive attacker would meet; adaptive attacks
        switch it on with advlab.attacks.adaptive.bpda_enabled.
    """

    def __init__(self, vae: ConvVAE, classifier: nn.Module, beta: float = 1.0, sample: bool = True,
                 quantize: bool = False):
        super().__init__()
        self.vae, self.classifier = vae, classifier
        self.beta = _check_beta(beta)
        self.sample, self.quantize = bool(sample), bool(quantize)
        self.bpda = False

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        r = self.vae(x, sample=self.sample)
        if self.quantize:
            r = _QUANTIZE_BPDA(r) if self.bpda else quantize_8bit(r)
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # The classification loss must not shape the VAE: left free, it would
            # turn the purifier into the classifier's first layers (pushing the
            # reconstruction toward whatever is easiest to classify, not toward the
            # image), and the "purification" would be a larger classifier with no
            # reason to remove perturbations. The VAE learns from extra_loss alone.
            # No graph is built, which is the same as detaching the reconstruction.
            with torch.no_grad():
                r = self.purify(x)
        else:
            r = self.purify(x)  # attacks need the gradient through the purifier
        return self.classifier(r)

    def extra_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The VAE's loss on x (negative ELBO per pixel value), to add to the classification loss."""
        return elbo_loss(self.vae, x, self.beta)
