"""The loader protocol: how the datasets' items become batches, and how a batch that failed reaches
the caller.

`Loader` (what `factory.build_loader` returns) is torch's DataLoader whose batches that failed
with a user error (`LOADER_ERRORS`) re-raise that error itself in the main process, class,
message and attributes intact, whether a worker or the main process loaded them. torch would
re-raise a worker's error rebuilt from its class and a traceback text ("Caught ... in DataLoader
worker process 0" and the worker's traceback). A dataset takes part through `__getitems__`: it
returns the loaded items, or a `PartialBatch` holding the errors (`load_items` does it for one
error per batch; the multi-view test's dataset keeps the other videos' views).

Stacked items ((num_sample, ...) per item: repeated augmentation) go through `collate_stacked`,
which flattens (B, num_sample, ...) to (B·num_sample, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch.utils.data import DataLoader, default_collate

from video_mcmae.errors import DataListError, TooManyBadFilesError, VideoReadError

from .readers import collect_garbage_before_fork

# Errors of the data, not of the code, that loading a batch may raise: a `Loader` hands them to
# the caller whole.
LOADER_ERRORS = (VideoReadError, TooManyBadFilesError, DataListError, OSError)


@dataclass
class PartialBatch:
    """In place of a batch that did not wholly load: `errors` maps a key (the multi-view test's
    video index; for other datasets the index of the item that failed) to the error, which pickles
    whole; `batch` holds the collated items that did load (the other test videos' views), or None."""

    batch: Any
    errors: Dict[int, BaseException]


class _CollatePartial:
    """The loader's collate function: collates lists of items with `collate` and the loaded items
    of a `PartialBatch` too (None when there are none). A class, so that workers can unpickle it."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, items):
        if isinstance(items, PartialBatch):
            return PartialBatch(self.collate(items.batch) if items.batch else None, items.errors)
        return self.collate(items)


class Loader(DataLoader):
    """torch's DataLoader for the datasets here: a batch that failed with one of `LOADER_ERRORS`
    raises that error when iterated (the first, for a `PartialBatch` with several); `batches()`
    yields the `PartialBatch` itself, for callers that go on past a failed video."""

    def __init__(self, dataset, *, collate_fn: Optional[Callable] = None, **kwargs):
        collect_garbage_before_fork()  # its workers are forked
        super().__init__(dataset, collate_fn=_CollatePartial(collate_fn or default_collate), **kwargs)

    def batches(self):
        """Batches and `PartialBatch`es, in order."""
        return super().__iter__()

    def __iter__(self):
        for batch in self.batches():
            if isinstance(batch, PartialBatch):
                raise next(iter(batch.errors.values()))
            yield batch


def load_items(dataset, indices: Sequence[int]):
    """`dataset[i]` for each index; a `PartialBatch` (no items) at the first of `LOADER_ERRORS`."""
    items = []
    for i in indices:
        try:
            items.append(dataset[i])
        except LOADER_ERRORS as e:
            return PartialBatch([], {i: e})
    return items


def collate_stacked(batch):
    """Collate items whose tensors are stacked per item (num_sample, ...) and flatten the first
    two dims, so the batch holds B·num_sample clips."""
    out = default_collate(batch)
    if isinstance(out, torch.Tensor):
        return out.flatten(0, 1)
    return type(out)(t.flatten(0, 1) for t in out)


def worker_init_fn(worker_id: int) -> None:
    # Decoding and transforms run one per worker; extra intra-op threads only oversubscribe.
    torch.set_num_threads(1)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle the sampler and re-seed the dataset's per-item generators for `epoch`."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
