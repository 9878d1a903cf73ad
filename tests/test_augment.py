"""random_crop_flip, and the datamodule applying it to training batches only."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from advlab.augment import random_crop_flip
from advlab.data import CIFAR10DataModule, to_unit_float
from helpers import config



def distinct_images(n, c=3, size=8, seed=0):
    """Values distinct and away from 0, so a window of the zero-padded image identifies its offset."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 0.9 + 0.05


def locate(out, x, padding):
    """(top, left, flipped) of the window of each zero-padded image that out shows; fails if not exactly one."""
    h, w = x.shape[-2:]
    windows = F.pad(x, (padding,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W)
    plain = (windows == out[:, :, None, None]).flatten(4).all(-1).all(1)  # (N, 2p+1, 2p+1)
    mirrored = (windows == out.flip(-1)[:, :, None, None]).flatten(4).all(-1).all(1)
    matches = torch.stack([plain, mirrored], dim=1).flatten(1)  # (N, 2 * (2p+1)^2)
    assert torch.equal(matches.sum(1), torch.ones(len(x), dtype=torch.long)), "not a crop of the padded image"
    index, side = matches.long().argmax(1), 2 * padding + 1
    return index % side**2 // side, index % side, index >= side**2


def test_output_is_a_new_tensor_of_the_same_shape_in_the_unit_range():
    x = distinct_images(16)
    before = x.clone()
    out = random_crop_flip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before), "the input was modified"
    assert out.data_ptr() != x.data_ptr()
    assert out.min() >= 0 and out.max() <= 1


def test_each_image_is_a_window_of_its_padded_self_with_offsets_and_flips_uniform():
    x = distinct_images(2000, c=1)
    top, left, flipped = locate(random_crop_flip(x, padding=4), x, padding=4)
    assert 0.45 < flipped.float().mean() < 0.55  # 2000 fair coins: 4.5 standard deviations
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 150 and counts.max() < 300, counts  # 222 expected each


def test_padding_zero_only_flips():
    x = distinct_images(64)
    out = random_crop_flip(x, padding=0)
    top, left, flipped = locate(out, x, padding=0)
    assert (top == 0).all() and (left == 0).all() and 0 < flipped.sum() < 64


def test_a_seeded_generator_repeats_itself():
    x = distinct_images(32)
    first = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    again = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    other = random_crop_flip(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_gpu_with_a_cpu_or_no_generator():
    x = distinct_images(64)
    for generator in (torch.Generator().manual_seed(0), None):
        out = random_crop_flip(x.cuda(), generator=generator)
        assert out.is_cuda
        locate(out.cpu(), x, padding=4)
    cpu = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(random_crop_flip(x.cuda(), generator=torch.Generator().manual_seed(5)).cpu(), cpu)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": -1}, "padding must be an integer >= 0"),
    ({"padding": 2.5}, "padding must be an integer >= 0"),
])
def test_bad_padding(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_crop_flip(distinct_images(2), **kwargs)


def test_a_single_image_without_batch_dimension_is_refused():
    with pytest.raises(ValueError, match=r"x must be a batch of images \(N, C, H, W\)"):
        random_crop_flip(torch.rand(3, 8, 8))


def test_the_datamodule_augments_training_batches_only(tmp_path):
    assert config().data.augment is False, "off keeps the seed study"
    g = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(32) % 10)
    plain = to_unit_float(batch[0].clone())

    def transfer(augment, trainer):
        dm = CIFAR10DataModule(root=str(tmp_path), augment=augment)
        dm.trainer = trainer
        x, y = dm.on_after_batch_transfer(batch, 0)
        assert torch.equal(y, batch[1]) and x.dtype == torch.float32 and x.shape == plain.shape
        return x

    assert torch.equal(transfer(True, None), plain), "no trainer: evaluation and attacks"
    assert torch.equal(transfer(True, SimpleNamespace(training=False)), plain), "validation, test"
    assert torch.equal(transfer(False, SimpleNamespace(training=True)), plain), "augment off"
    augmented = transfer(True, SimpleNamespace(training=True))
    assert not torch.equal(augmented, plain)
    assert augmented.min() >= 0 and augmented.max() <= 1
