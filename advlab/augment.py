"""The standard CIFAR-10 training augmentation, on whole batches on their own device.

Random crop with zero padding plus a horizontal flip with probability 1/2: the
augmentation of every CIFAR-10 robustness baseline (Madry et al., TRADES, Wong et al.).
It runs on a batch that is already on the GPU, so training needs no CPU workers.
"""

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None,
                     flip: bool = True) -> torch.Tensor:
    """Each image of x (N, C, H, W) padded with `padding` zeros on every side, cropped back
    to H x W at a random offset, and mirrored left-right with probability 1/2 (flip=False:
    never, for data such as digits whose mirror image is another class or none; the same
    random numbers are drawn either way).

    Offsets and flips are drawn independently per image, from `generator` when given (it
    may live on another device than x). Returns a new tensor; x is left untouched.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if int(padding) != padding or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding}")
    padding = int(padding)
    n, _, h, w = x.shape
    # Random numbers come from the generator's device (a CPU generator cannot draw on CUDA),
    # then move to x's: N integers, negligible beside the batch.
    draw_on = generator.device if generator is not None else x.device
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=draw_on).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=draw_on).to(x.device)
    mirror = torch.randint(0, 2, (n,), generator=generator, device=draw_on).to(x.device).bool() & bool(flip)

    padded = F.pad(x, (padding, padding, padding, padding))
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H): padded row of each output row
    cols = torch.arange(w, device=x.device).expand(n, w)
    # A flipped image reads its window right to left, so crop and flip are one gather.
    cols = left[:, None] + torch.where(mirror[:, None], w - 1 - cols, cols)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]
