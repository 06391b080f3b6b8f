"""Evaluation samplers: how the items of an unshuffled dataset are split across ranks.

Training uses torch's `DistributedSampler` (shuffled, re-seeded per epoch by `set_epoch`).
- `StridedShardSampler` (single-view validation): every item on exactly one rank, no padding, so
  sums over ranks count each video once and accuracies do not depend on the number of ranks.
- `PaddedContiguousSampler` (multi-view test): consecutive blocks of equal length, so the views of
  one video stay on one rank and are decoded once; the last block repeats the last item, and the
  multi-view merge removes the duplicates.
"""
from __future__ import annotations

from typing import Iterator, Sized

from torch.utils.data import Sampler


class StridedShardSampler(Sampler):
    """Indices rank, rank + world_size, ...: every item on exactly one rank, no padding (ranks'
    counts differ by at most one)."""

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, len(dataset), world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PaddedContiguousSampler(Sampler):
    """Contiguous, unshuffled block of the dataset for one rank; the last index repeats so every
    rank gets the same count. Keeps a video's views on one rank, so each is decoded once."""

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1):
        n = len(dataset)
        self.per_rank = -(-n // world_size)
        start = rank * self.per_rank
        own = list(range(start, min(start + self.per_rank, n)))
        self.indices = own + [n - 1] * (self.per_rank - len(own))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.per_rank
