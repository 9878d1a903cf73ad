"""What evaluation needs from torch.distributed: this process's rank, its shard of the
test set with each image's index in the whole set, and one gather of the per-image rows at the end.

Under Lightning DDP every process runs the evaluation with the same loader; each one
evaluates a disjoint shard, and the ranks gather their rows of the per-image record once, so every
rank ends with the record (and the numbers) of the whole test set. Without a process group, or with
a single process, all of it is a no-op.
"""

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, SequentialSampler


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size), or (0, 1) when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def block(n: int, rank: int, world_size: int) -> range:
    """Rank's contiguous block of range(n); blocks differ in size by at most one (the first
    n % world_size ranks take one more) and together cover range(n) exactly once."""
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def shard(loader: Iterable, rank: int, world_size: int) -> Iterable:
    """This rank's part of `loader`; every image falls in exactly one rank's part.

    A DataLoader over a map-style dataset is split by the (sorted) indices its sampler
    visits, in contiguous blocks, keeping its batch size, workers and collate function (and evaluating
    every image: drop_last is not carried over). Any other iterable is split by batch, round
    robin, which is correct only when every rank's loader yields the same batches in the
    same order.
    """
    if world_size == 1:
        return loader
    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset) and loader.batch_size:
        if isinstance(loader.sampler, DistributedSampler):
            # It pads the last shard with repeated images, which would then be counted twice.
            raise ValueError("loader: already sharded by a DistributedSampler; pass the loader of the whole "
                             "test set, the evaluation shards it over the ranks itself")
        # Sorted: a shuffling sampler draws a different order on each rank, but the same set.
        indices = sorted(loader.sampler)
        mine = [indices[i] for i in block(len(indices), rank, world_size)]
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=mine, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
    return _EveryNthBatch(loader, rank, world_size)


class _EveryNthBatch:
    """Batches rank, rank + W, rank + 2W, ... of a loader (sized if the loader is)."""

    def __init__(self, loader: Iterable, rank: int, world_size: int):
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.rank, None, self.world_size)

    def __len__(self) -> int:
        return len(range(self.rank, len(self.loader), self.world_size))


def indexed_batches(loader: Iterable) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(the images' indices in the whole test set, images, labels) per batch of `loader` (a shard or not).

    A DataLoader with a fixed order (sequential, or the list of indices `shard` gives it) says which images
    its batches hold; a round-robin shard counts the whole loader's batches it skips; any other iterable is
    numbered in the order it yields its images (so is a shuffling loader: its order is drawn anew)."""
    if isinstance(loader, _EveryNthBatch):
        start = 0
        for i, (x, y) in enumerate(loader.loader):
            if i % loader.world_size == loader.rank:
                yield np.arange(start, start + len(y)), x, y
            start += len(y)
        return
    order = None
    if isinstance(loader, DataLoader) and loader.batch_size and isinstance(loader.sampler, (SequentialSampler, list)):
        order = np.asarray(list(loader.sampler), dtype=np.int64)
    start = 0
    for x, y in loader:
        yield (order[start:start + len(y)] if order is not None else np.arange(start, start + len(y))), x, y
        start += len(y)


def gather_records(record):
    """The per-image record of the whole set from every rank's part (one all_gather_object); unchanged with
    one process."""
    if rank_and_world_size()[1] == 1:
        return record
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, record)
    return type(record).concat(parts)
