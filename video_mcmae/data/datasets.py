"""Datasets and loaders: video pretraining / classification / multi-view test, and image folders.

Randomness: every item draws from a `random.Random` seeded by (seed, epoch, index), so the
clips of an epoch do not depend on the number of workers or on which worker loads what. The
epoch lives in shared memory, so `set_epoch` reaches persistent workers too.

Unreadable files:
- training (pretrain/train): the file is logged once with its path and reason, remembered, and
  the item is replaced by the next readable sample in list order (index + 1, + 2, ...). The
  replacements of the current epoch and the unreadable files found so far are counted in shared
  memory (`bad_file_stats()`, `bad_file_mask()`); when more than `max_bad_fraction` of the list
  is unreadable the process stops with `TooManyBadFilesError`. These are one process's counts:
  the training loop combines the ranks' masks and stops every rank together.
- validation / test: nothing is replaced. `scan()` (done by `build_dataset`) checks every file
  and excludes the unreadable ones explicitly: they are listed in `.excluded` as
  (list index, path, reason) and have no items. A file that passed the scan but fails later
  raises `VideoReadError`; through a `Loader`, the multi-view test's views of such a video come
  back as a `PartialBatch` instead, so the test can exclude it and go on.

Loaders: `Loader` (what `build_loader` returns) is torch's DataLoader whose batches that failed
with a user error (`LOADER_ERRORS`) re-raise that error itself in the main process, class,
message and attributes intact, whether a worker or the main process loaded them. torch would
re-raise a worker's error rebuilt from its class and a traceback text ("Caught ... in DataLoader
worker process 0" and the worker's traceback).

Item formats (video clips are uint8, normalised on the device by the steps: `device.py`; image
datasets give normalised float images):
- `PretrainDataset`: clips (num_sample, C, T, H, W).
- `VideoClsDataset`: (clip (C, T, H, W), label); with num_sample > 1 in training
  (clips (num_sample, C, T, H, W), labels (num_sample,)).
- `VideoTestDataset`: (clip, label, video_index, temporal_view, spatial_view), one item per view.
Stacked items go through `collate_stacked`, which flattens (B, num_sample, ...) to (B·num_sample, ...).
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from video_mcmae.errors import DataListError, TooManyBadFilesError, VideoReadError

from .lists import Sample, read_class_names, read_list
from .readers import DEFAULT_BACKEND, open_video, scan_videos
from .samplers import PaddedContiguousSampler
from .sampling import DATASET_SAMPLING, sample_indices
from .transforms import (
    EvalTransform,
    PretrainTransform,
    TrainTransform,
    allows_flip,
    image_eval_transform,
    image_pretrain_transform,
    image_train_transform,
    seeded_globals,
)

logger = logging.getLogger(__name__)

SPLITS = ("pretrain", "train", "val", "test")
_MAX_WORKER_SLOTS = 256  # one replacement counter per DataLoader worker (no cross-process races)


# Errors of the data, not of the code, that loading a batch may raise: a `Loader` hands them to
# the caller whole (see the module docstring).
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
        super().__init__(dataset, collate_fn=_CollatePartial(collate_fn or default_collate), **kwargs)

    def batches(self):
        """Batches and `PartialBatch`es, in order."""
        return super().__iter__()

    def __iter__(self):
        for batch in self.batches():
            if isinstance(batch, PartialBatch):
                raise next(iter(batch.errors.values()))
            yield batch


def _load_items(dataset, indices):
    """`dataset[i]` for each index; a `PartialBatch` (no items) at the first of `LOADER_ERRORS`."""
    items = []
    for i in indices:
        try:
            items.append(dataset[i])
        except LOADER_ERRORS as e:
            return PartialBatch([], {i: e})
    return items


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index), stable across processes and Python versions."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    return random.Random(sample_seed(seed, epoch, index))


def _worker_slot() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (_MAX_WORKER_SLOTS - 1)


class _VideoDataset(Dataset):
    """Shared parts: the list, the reader backend, the shared epoch counter."""

    def __init__(self, samples: Sequence[Sample], *, backend: str, fallback: bool, seed: int):
        if not samples:
            raise DataListError("dataset has no samples")
        self.samples = list(samples)
        self.backend, self.fallback, self.seed = backend, fallback, seed
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __getitems__(self, indices: Sequence[int]):
        # What a DataLoader calls for a batch: errors come back as a PartialBatch (see Loader).
        return _load_items(self, indices)

    def _decode(self, path: str, sampling: str, mode: str, clip_len: int, rate: int,
                rng: Optional[random.Random] = None, num_views: int = 1,
                view: Optional[int] = None) -> np.ndarray:
        """(S, F, H, W, 3) uint8 frames of the sampled views ((1, F, ...) for one `view`)."""
        with open_video(path, self.backend, fallback=self.fallback) as r:
            idx = sample_indices(sampling, mode, r.num_frames, clip_len, rate, rng, num_views)
            if view is not None:
                idx = idx[view:view + 1]
            frames = r.get_frames(idx.reshape(-1))
        return frames.reshape(idx.shape + frames.shape[1:])


class _TrainingMixin:
    """Bad-file replacement and counting for training datasets (see the module docstring)."""

    def _init_bad_tracking(self, max_bad_fraction: float) -> None:
        self.max_bad_fraction = max_bad_fraction
        self._bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()
        self._replaced = torch.zeros(_MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._replaced.zero_()

    def bad_file_stats(self) -> dict:
        """{'bad_files': unreadable files this process has found so far, 'replaced':
        replacements this epoch, 'num_samples': list length}. Across ranks, sum 'replaced';
        for the distinct bad files all-reduce `bad_file_mask()` with MAX (ranks see overlapping
        files over the epochs) and count."""
        return dict(bad_files=int(self._bad.sum()), replaced=int(self._replaced.sum()),
                    num_samples=len(self.samples))

    def bad_file_mask(self) -> torch.Tensor:
        """(num_samples,) uint8, 1 where the file was found unreadable."""
        return self._bad.to(torch.uint8)

    def bad_file_paths(self) -> List[str]:
        return [self.samples[i].path for i in torch.nonzero(self._bad).flatten().tolist()]

    def too_many_bad_files(self, mask: torch.Tensor) -> Optional[TooManyBadFilesError]:
        """The error that stops training when the files marked in `mask` ((num_samples,), nonzero =
        unreadable: this process's `bad_file_mask()` or all ranks' combined) are more than
        `max_bad_fraction` of the list, or all of it; None otherwise. The message depends on the
        mask only, so ranks that combined their masks stop with the same words."""
        bad = torch.nonzero(mask).flatten().tolist()
        n = len(self.samples)
        if len(bad) <= self.max_bad_fraction * n and len(bad) < n:
            return None
        shown = ", ".join(self.samples[i].path for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
        return TooManyBadFilesError(
            f"{len(bad)} of {n} videos in the training list are unreadable (more than "
            f"data.max_bad_fraction={self.max_bad_fraction}): {shown}; each is logged with its reason. "
            "Run tools/check_data_list.py to write a clean list, or raise data.max_bad_fraction.")

    def _mark_bad(self, index: int, error: VideoReadError) -> None:
        if not self._bad[index]:
            self._bad[index] = True
            logger.warning("unreadable training video %s (%s); replaced by another sample, "
                           "see tools/check_data_list.py", error.path, error.reason)
        stop = self.too_many_bad_files(self._bad)
        if stop is not None:
            raise stop

    def _load_replacing(self, index: int, load: Callable[[int], object]):
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            if self._bad[i]:
                continue
            try:
                item = load(i)
            except VideoReadError as e:
                self._mark_bad(i, e)
                continue
            if i != index:
                self._replaced[_worker_slot()] += 1
            return item
        raise self.too_many_bad_files(self._bad)  # every file is marked now: never None


class PretrainDataset(_TrainingMixin, _VideoDataset):
    """Dense clips (stride `sampling_rate`) with `num_sample` augmentations of one decode;
    an item is the stacked clips (num_sample, C, T, H, W)."""

    def __init__(self, samples: Sequence[Sample], *, num_frames: int, sampling_rate: int,
                 transform: Callable, num_sample: int = 1, backend: str = DEFAULT_BACKEND,
                 fallback: bool = True, seed: int = 0, max_bad_fraction: float = 0.05):
        super().__init__(samples, backend=backend, fallback=fallback, seed=seed)
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.transform, self.num_sample = transform, num_sample
        self._init_bad_tracking(max_bad_fraction)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = sample_rng(self.seed, self.epoch, index)

        def load(i: int) -> torch.Tensor:
            frames = self._decode(self.samples[i].path, "dense", "train", self.num_frames,
                                  self.sampling_rate, rng)[0]
            return torch.stack([self.transform(frames, rng) for _ in range(self.num_sample)])

        return self._load_replacing(index, load)


class VideoClsDataset(_TrainingMixin, _VideoDataset):
    """Classification clips. `mode` 'train' samples randomly and augments (bad files replaced);
    'val' takes the deterministic centre clip (dense) or segment centres (segment)."""

    def __init__(self, samples: Sequence[Sample], *, mode: str, sampling: str, num_frames: int,
                 sampling_rate: int, transform: Callable, num_sample: int = 1,
                 backend: str = DEFAULT_BACKEND, fallback: bool = True, seed: int = 0,
                 max_bad_fraction: float = 0.05):
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        if mode == "val" and num_sample != 1:
            raise ValueError("repeated sampling (num_sample > 1) is for training only")
        super().__init__(samples, backend=backend, fallback=fallback, seed=seed)
        self.mode, self.sampling = mode, sampling
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.transform, self.num_sample = transform, num_sample
        self._init_bad_tracking(max_bad_fraction)
        self.index_map = list(range(len(self.samples)))  # list indices still in use (val: after scan)
        self.excluded: List[Tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self.index_map)

    def scan(self, workers: int = 0, progress: bool = False) -> List[Tuple[int, str, str]]:
        """Validation: exclude unreadable videos; returns and stores (list index, path, reason)."""
        bad = scan_videos([s.path for s in self.samples], self.backend, workers, self.fallback, progress)
        self.excluded = [(i, self.samples[i].path, bad[i]) for i in sorted(bad)]
        self.index_map = [i for i in range(len(self.samples)) if i not in bad]
        return self.excluded

    def __getitem__(self, index: int):
        if self.mode == "val":
            s = self.samples[self.index_map[index]]
            frames = self._decode(s.path, self.sampling, "val", self.num_frames, self.sampling_rate)[0]
            return self.transform(frames), s.label
        rng = sample_rng(self.seed, self.epoch, index)

        def load(i: int):
            s = self.samples[i]
            frames = self._decode(s.path, self.sampling, "train", self.num_frames,
                                  self.sampling_rate, rng)[0]
            if self.num_sample == 1:
                return self.transform(frames, rng), s.label
            clips = torch.stack([self.transform(frames, rng) for _ in range(self.num_sample)])
            return clips, torch.full((self.num_sample,), s.label, dtype=torch.int64)

        return self._load_replacing(index, load)


class VideoTestDataset(_VideoDataset):
    """Multi-view test: one item per (video, temporal view, spatial view), in that order, so a
    distributed sampler can split views. Items: (clip, label, video_index, temporal_view,
    spatial_view) with video_index the line's position in the list (0-based, blank lines not
    counted). The spatial views of one temporal view are consecutive and reuse the worker's
    last decode; `build_loader` shards the items contiguously (`PaddedContiguousSampler`) for
    the same reason."""

    def __init__(self, samples: Sequence[Sample], *, sampling: str, num_frames: int,
                 sampling_rate: int, num_temporal_views: int, num_spatial_crops: int,
                 transform: EvalTransform, backend: str = DEFAULT_BACKEND, fallback: bool = True):
        super().__init__(samples, backend=backend, fallback=fallback, seed=0)
        if transform.num_crops != num_spatial_crops:
            raise ValueError(f"transform makes {transform.num_crops} crops, dataset expects {num_spatial_crops}")
        self.sampling, self.num_frames, self.sampling_rate = sampling, num_frames, sampling_rate
        self.num_temporal_views, self.num_spatial_crops = num_temporal_views, num_spatial_crops
        self.transform = transform
        self.video_indices = list(range(len(self.samples)))
        self.excluded: List[Tuple[int, str, str]] = []
        self._cache: Tuple[Optional[Tuple[int, int]], Optional[torch.Tensor]] = (None, None)

    @property
    def views_per_video(self) -> int:
        return self.num_temporal_views * self.num_spatial_crops

    def __len__(self) -> int:
        return len(self.video_indices) * self.views_per_video

    def scan(self, workers: int = 0, progress: bool = False) -> List[Tuple[int, str, str]]:
        """Exclude unreadable videos; returns and stores (video index, path, reason)."""
        bad = scan_videos([s.path for s in self.samples], self.backend, workers, self.fallback, progress)
        self.excluded = [(i, self.samples[i].path, bad[i]) for i in sorted(bad)]
        self.video_indices = [i for i in range(len(self.samples)) if i not in bad]
        return self.excluded

    def video_of(self, index: int) -> int:
        """The video index (line in the list) of item `index`."""
        return self.video_indices[index // self.views_per_video]

    def __getitems__(self, indices: Sequence[int]):
        """A batch of views for a DataLoader. A video that passed the scan but fails to decode now
        does not fail the batch: its views are left out and its error returned, keyed by the
        video index, in a `PartialBatch` with the other views."""
        items, errors = [], {}
        for i in indices:
            video = self.video_of(i)
            if video in errors:
                continue
            try:
                items.append(self[i])
            except VideoReadError as e:
                errors[video] = e
        return PartialBatch(items, errors) if errors else items

    def expected_views(self) -> List[Tuple[int, int, int]]:
        """Every (video_index, temporal_view, spatial_view) the items cover."""
        return [(v, t, s) for v in self.video_indices
                for t in range(self.num_temporal_views) for s in range(self.num_spatial_crops)]

    def __getitem__(self, index: int):
        temporal, spatial = divmod(index % self.views_per_video, self.num_spatial_crops)
        video = self.video_of(index)
        s = self.samples[video]
        if self._cache[0] != (video, temporal):
            frames = self._decode(s.path, self.sampling, "test", self.num_frames,
                                  self.sampling_rate, num_views=self.num_temporal_views, view=temporal)
            self._cache = ((video, temporal), self.transform.resize(frames[0]))
        clip = self.transform.crop(self._cache[1], spatial)
        return clip, s.label, video, temporal, spatial


def image_folder_samples(root: str) -> Tuple[List[Sample], List[str]]:
    """ImageNet-style `<root>/<class>/<image>`: classes sorted by name get ids 0..K-1."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not os.path.isdir(root):
        raise DataListError(f"image folder not found: {root!r}")
    classes, class_to_idx = find_classes(root)
    items = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    return [Sample(p, label, 0) for p, label in items], classes


class ImageDataset(Dataset):
    """Images from a list or folder; `with_label=False` returns the image only (pretraining).
    Augmentations are seeded per (seed, epoch, index) like the video datasets. Unlike the video
    clips, images leave the workers normalised (and erased) as float32: timm's image transforms
    do it there, and the steps only move and cast them (`device.to_model_input`)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, *, with_label: bool = True, seed: int = 0):
        if not samples:
            raise DataListError("image dataset has no samples")
        self.samples, self.transform = list(samples), transform
        self.with_label, self.seed = with_label, seed
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __getitems__(self, indices: Sequence[int]):
        return _load_items(self, indices)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        s = self.samples[index]
        try:
            with Image.open(s.path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read image {s.path!r}: {e}") from None
        with seeded_globals(sample_seed(self.seed, int(self._epoch[0]), index)):
            x = self.transform(img)
        return (x, s.label) if self.with_label else x


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


# ---------------------------------------------------------------------------------------------
# From a config


def _list_for(cfg, split: str) -> str:
    key = {"pretrain": "train_list", "train": "train_list", "val": "val_list", "test": "test_list"}[split]
    path = getattr(cfg.data, key)
    if not path:
        raise DataListError(f"data.{key} is empty; set it to the {split} list (see data_lists/README.md)")
    return path


def build_dataset(cfg, split: str, scan_progress: bool = False):
    """The dataset for `split` in {'pretrain', 'train', 'val', 'test'} from a `Config`.

    Validation and test datasets are scanned (with data.num_workers processes) and their
    unreadable videos excluded and logged; see `.excluded`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    d, a, m = cfg.data, cfg.aug, cfg.model
    num_classes = None if split == "pretrain" else m.num_classes
    size = m.img_size
    class_names = read_class_names(d.class_names, num_classes) if d.class_names else None
    list_path = _list_for(cfg, split)

    if d.dataset == "image":
        if os.path.isdir(list_path):
            samples, folder_classes = image_folder_samples(list_path)
            if num_classes is not None and len(folder_classes) > num_classes:
                raise DataListError(f"{list_path} has {len(folder_classes)} class folders but "
                                    f"model.num_classes={num_classes}")
            class_names = class_names or folder_classes
        else:
            samples = read_list(list_path, num_classes, d.data_root or None)
        if split == "pretrain":
            ds = ImageDataset(samples, image_pretrain_transform(size, d.mean, d.std), with_label=False, seed=cfg.run.seed)
        elif split == "train":
            ds = ImageDataset(samples, image_train_transform(size, d.mean, d.std, a), seed=cfg.run.seed)
        else:
            ds = ImageDataset(samples, image_eval_transform(size, d.mean, d.std), seed=cfg.run.seed)
        ds.class_names = class_names
        return ds

    samples = read_list(list_path, num_classes, d.data_root or None)
    common = dict(backend=d.reader)
    sampling = DATASET_SAMPLING[d.dataset]
    if split == "pretrain":
        transform = PretrainTransform(size, a.pretrain_scales)
        ds = PretrainDataset(samples, num_frames=m.num_frames, sampling_rate=d.sampling_rate,
                             transform=transform, num_sample=d.num_sample, seed=cfg.run.seed,
                             max_bad_fraction=d.max_bad_fraction, **common)
    elif split == "train":
        transform = TrainTransform(size, flip=allows_flip(d.dataset), scale=a.crop_scale, ratio=a.crop_ratio,
                                   rand_augment=a.rand_augment, interpolation=a.train_interpolation)
        ds = VideoClsDataset(samples, mode="train", sampling=sampling, num_frames=m.num_frames,
                             sampling_rate=d.sampling_rate, transform=transform,
                             num_sample=d.num_sample, seed=cfg.run.seed,
                             max_bad_fraction=d.max_bad_fraction, **common)
    elif split == "val":
        transform = EvalTransform(size, d.short_side_size, num_crops=1)
        ds = VideoClsDataset(samples, mode="val", sampling=sampling, num_frames=m.num_frames,
                             sampling_rate=d.sampling_rate, transform=transform, **common)
    else:
        transform = EvalTransform(size, d.short_side_size, num_crops=d.test_num_spatial_crops)
        ds = VideoTestDataset(samples, sampling=sampling, num_frames=m.num_frames,
                              sampling_rate=d.sampling_rate, num_temporal_views=cfg.num_temporal_views,
                              num_spatial_crops=d.test_num_spatial_crops, transform=transform, **common)
    if split in ("val", "test"):
        for index, path, reason in ds.scan(d.num_workers, progress=scan_progress):
            logger.warning("excluded unreadable %s video %d: %s (%s)", split, index, path, reason)
    ds.class_names = class_names
    return ds


def build_loader(cfg, split: str, dataset=None, rank: int = 0, world_size: int = 1) -> Loader:
    """A `Loader` for `split` over `dataset` (built from cfg when None), sharded by a
    DistributedSampler (also with world_size 1, so `set_epoch` reshuffles reproducibly), or
    contiguously by `PaddedContiguousSampler` for the multi-view test (padding repeats the last
    view; the merge de-duplicates). Training loaders shuffle and drop the last incomplete batch; call
    `set_epoch(loader, e)`."""
    if dataset is None:
        dataset = build_dataset(cfg, split)
    training = split in ("pretrain", "train")
    if isinstance(dataset, VideoTestDataset):
        sampler = PaddedContiguousSampler(dataset, rank, world_size)
    else:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=training,
                                     seed=cfg.run.seed, drop_last=False)
    stacked = isinstance(dataset, PretrainDataset) or getattr(dataset, "num_sample", 1) > 1
    workers = cfg.data.num_workers
    return Loader(
        dataset,
        batch_size=cfg.optim.batch_size if training else cfg.test.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=cfg.data.pin_memory and torch.cuda.is_available(),
        drop_last=training,
        collate_fn=collate_stacked if stacked else None,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        persistent_workers=workers > 0 and training,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle the sampler and re-seed the dataset's per-item generators for `epoch`."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
