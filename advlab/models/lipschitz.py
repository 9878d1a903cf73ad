"""A CIFAR-10 classifier that is 1-Lipschitz in L2 by construction, from AOL layers.

AOL (Prach & Lampert 2022, "Almost-orthogonal layers"): for any matrix P, the rescaled
P·D with D = diag(sum_j |P^T P|_ij)^(-1/2) has spectral norm <= 1. Every linear map of
the network is rescaled this way in each forward pass, so the bound holds whatever the
weights are, during and after training. The rest of the network only uses maps that
are 1-Lipschitz themselves:

- subtracting the training set's mean (CIFAR-10's unless `mean` is given; a shift;
  dividing by the std would multiply the constant by 1/min(std), about 4, so it is not done);
- pixel-unshuffle for downsampling (a permutation of the coordinates: an isometry);
- MaxMin activations (sorting each pair of channels: 1-Lipschitz, and gradient-norm
  preserving, which ReLU is not);
- biases (a shift).

A composition of 1-Lipschitz maps is 1-Lipschitz, so `lipschitz_constant` is 1.0 and
an image with logit margin m is certified at every L2 radius below m / sqrt(2)
(advlab.defenses.lipschitz).

Convolutions: the same rescaling with P^T P's rows taken from the kernel convolved
with itself. Why it holds with zero padding: a zero-padded, stride-1 conv on an H x W
image equals zero-embedding the image in a torus of (H + k - 1) x (W + k - 1)
(an isometry), a circular conv there (whose windows around the H x W outputs never
wrap), then cropping to H x W (norm <= 1). The circular conv's P^T P has rows whose
absolute sums are at most those of the self-convolution of the kernel (terms that wrap
onto the same entry only add up, and |a + b| <= |a| + |b|), so the AOL theorem bounds
it by 1, and so the zero-padded conv.
"""

import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.normalize import CIFAR10_MEAN
from advlab.models.normalize import image_size as check_image_size


def aol_rescale_linear(weight: torch.Tensor) -> torch.Tensor:
    """W·D with d_i = (sum_j |W^T W|_ij)^(-1/2), or D'·W from W W^T when W has fewer rows.

    ||W|| = ||W^T||, so the theorem applied to W^T (scaling the outputs) is as valid, and
    its Gram matrix is out x out instead of in x in: 10 x 10 instead of 1024 x 1024 for a
    classifier's last layer, where the larger Gram matrix costs more than the whole
    rest of the training step.
    """
    if weight.shape[0] < weight.shape[1]:
        return weight * (weight @ weight.t()).abs().sum(1).clamp_min(1e-12).rsqrt()[:, None]
    return weight * (weight.t() @ weight).abs().sum(1).clamp_min(1e-12).rsqrt()[None, :]


def aol_rescale_conv(weight: torch.Tensor) -> torch.Tensor:
    """P·D for a conv kernel P (out, in, kh, kw), D from P^T P, whose row i is the kernel's
    input channel i correlated with every input channel j at every offset."""
    kh, kw = weight.shape[-2:]
    per_input = weight.transpose(0, 1)  # (in, out, kh, kw): each input channel's filters as an "image"
    gram = F.conv2d(per_input, per_input, padding=(kh - 1, kw - 1))  # (in, in, 2kh-1, 2kw-1)
    return weight * gram.abs().sum((1, 2, 3)).clamp_min(1e-12).rsqrt()[None, :, None, None]


class AOLLinear(nn.Module):
    """y = W' x + b with W' the AOL rescaling of W: ||W'||_2 <= 1 for any W."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_normal_(self.weight)

    def rescaled_weight(self) -> torch.Tensor:
        return aol_rescale_linear(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.rescaled_weight(), self.bias)


class AOLConv2d(nn.Module):
    """Stride-1, zero-padded ("same") conv with its kernel rescaled by AOL: operator norm <= 1.

    Initialised near the identity on the first min(in, out) channels, which AOL leaves
    (nearly) unchanged, P^T P being (nearly) diagonal: a deep stack then starts as an isometry instead of
    shrinking the signal layer after layer, which is what AOL does to random kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1 (same padding), got {kernel_size}")
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        with torch.no_grad():
            n = min(in_channels, out_channels)
            self.weight[range(n), range(n), self.padding, self.padding] = 1.0
            # A little noise so that the channels the identity leaves out receive a gradient.
            self.weight.add_(0.01 * torch.randn_like(self.weight))

    def rescaled_weight(self) -> torch.Tensor:
        return aol_rescale_conv(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.rescaled_weight(), self.bias, padding=self.padding)


class MaxMin(nn.Module):
    """Split the channels into two halves a, b and return (max(a, b), min(a, b))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        # max = (a + b)/2 + |a - b|/2 and min = (a + b)/2 - |a - b|/2: the same values, and a
        # backward pass of plain elementwise ops, twice as fast on CPU as maximum/minimum's.
        mid, half_gap = 0.5 * (a + b), 0.5 * (a - b).abs()
        return torch.cat([mid + half_gap, mid - half_gap], dim=1)


class LipschitzCNN(nn.Module):
    """1-Lipschitz (L2, on [0, 1] images) CIFAR classifier returning logits.

    Three stages at 16x16, 8x8 and 4x4 (width, 2·width, 4·width channels), each entered by
    pixel-unshuffle and a 1x1 AOL conv and followed by `depth` 3x3 AOL convs, all with
    MaxMin; then AOL dense layers on the flattened 4x4 map (one hidden layer of `hidden`
    units with MaxMin when hidden > 0). Those sizes are for 32x32 images; `image_size`
    H x W (multiples of 8) gives stages at H/2, H/4, H/8 and an H/8 x W/8 map. Downsampling is pixel-unshuffle (a permutation),
    never a strided conv, so every conv is the stride-1 case that AOL bounds.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, depth: int = 1, kernel_size: int = 3,
                 hidden: int = 0, center: bool = True, mean=None, image_size=(32, 32)):
        super().__init__()
        for name, value, low in (("num_classes", num_classes, 2), ("width", width, 2), ("depth", depth, 0),
                                 ("kernel_size", kernel_size, 1), ("hidden", hidden, 0)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        if width % 2:
            raise ValueError(f"width must be even (MaxMin pairs up channels), got {width}")
        if hidden % 2:
            raise ValueError(f"hidden must be even (MaxMin pairs up channels), or 0 for no hidden layer, got {hidden}")
        self.image_size = check_image_size(image_size, multiple=8)  # three pixel-unshuffles by 2
        mean = (CIFAR10_MEAN if mean is None else tuple(mean)) if center else (0.0, 0.0, 0.0)
        if len(mean) != 3:
            raise ValueError(f"mean must have 3 values (RGB), got {list(mean)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))

        layers, channels = [], 3
        for stage in range(3):
            out = width * 2**stage
            layers += [nn.PixelUnshuffle(2), AOLConv2d(4 * channels, out, 1), MaxMin()]
            for _ in range(depth):
                layers += [AOLConv2d(out, out, kernel_size), MaxMin()]
            channels = out
        self.features = nn.Sequential(*layers)
        flat = channels * (self.image_size[0] // 8) * (self.image_size[1] // 8)
        head = [AOLLinear(flat, hidden), MaxMin(), AOLLinear(hidden, num_classes)] if hidden else \
            [AOLLinear(flat, num_classes)]
        self.head = nn.Sequential(nn.Flatten(), *head)

    @property
    def lipschitz_constant(self) -> float:
        """A proven upper bound of the L2 Lipschitz constant of input -> logits (see the module docstring)."""
        return 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            h, w = self.image_size
            raise ValueError(f"x must be {h}x{w} images (N, 3, {h}, {w}), got shape {tuple(x.shape)}")
        return self.head(self.features(x - self.mean))

