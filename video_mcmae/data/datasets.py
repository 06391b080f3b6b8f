"""The datasets: video pretraining, classification training, validation, multi-view test, and images.

Randomness: every item draws from a `random.Random` seeded by (seed, epoch, index), so the
clips of an epoch do not depend on the number of workers or on which worker loads what. The
epoch lives in shared memory, so `set_epoch` reaches persistent workers too.

Unreadable files:
- training (`PretrainDataset`, `VideoTrainDataset`): the file is logged once with its path and
  reason, remembered, and the item is replaced by the next readable sample in list order (index
  + 1, + 2, ...). The replacements of the current epoch and the unreadable files found so far are
  counted in shared memory (`bad_file_stats()`, `bad_file_mask()`); when more than
  `max_bad_fraction` of the list is unreadable the process stops with `TooManyBadFilesError`.
  These are one process's counts: the training loop combines the ranks' masks and stops every
  rank together.
- validation / test (`VideoValDataset`, `VideoTestDataset`): nothing is replaced. `scan()` (done
  by `factory.build_dataset`) checks every file and excludes the unreadable ones explicitly: they
  are listed in `.excluded` as (list index, path, reason) and have no items. A file that passed
  the scan but fails later raises `VideoReadError`; through a `Loader`, the multi-view test's
  views of such a video come back as a `PartialBatch` instead, so the test can exclude it and go on.

Item formats (video clips are uint8, normalised on the device by the steps: `device.py`; image
datasets give normalised float images):
- `PretrainDataset`: clips (num_sample, C, T, H, W).
- `VideoTrainDataset`: (clip (C, T, H, W), label); with num_sample > 1
  (clips (num_sample, C, T, H, W), labels (num_sample,)).
- `VideoValDataset`: (clip (C, T, H, W), label), the deterministic view.
- `VideoTestDataset`: (clip, label, video_index, temporal_view, spatial_view), one item per view.
How items become batches (`Loader`, `PartialBatch`, `collate_stacked`): `loader.py`.
"""
from __future__ import annotations

import logging
import random
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torch.utils.data import Dataset

from video_mcmae.errors import DataListError, TooManyBadFilesError, VideoReadError

from .lists import Sample
from .loader import PartialBatch, load_items
from .readers import DEFAULT_BACKEND, open_video, scan_videos
from .sampling import sample_indices
from .transforms import EvalTransform, seeded_globals

logger = logging.getLogger(__name__)

_MAX_WORKER_SLOTS = 256  # one replacement counter per DataLoader worker (no cross-process races)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index), stable across processes and Python versions."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    return random.Random(sample_seed(seed, epoch, index))


def _worker_slot() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (_MAX_WORKER_SLOTS - 1)


class _ListDataset(Dataset):
    """Shared parts of every dataset here: the list, the class names, the per-item seed and the
    epoch counter in shared memory, and the loader protocol (`__getitems__`)."""

    def __init__(self, samples: Sequence[Sample], *, seed: int, class_names: Optional[List[str]]):
        if not samples:
            raise DataListError("dataset has no samples")
        self.samples, self.seed = list(samples), seed
        self.class_names = class_names
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __getitems__(self, indices: Sequence[int]):
        # What a DataLoader calls for a batch: errors come back as a PartialBatch (see loader.py).
        return load_items(self, indices)


class _VideoDataset(_ListDataset):
    """Video lists: the reader backend and the decode of sampled views."""

    def __init__(self, samples: Sequence[Sample], *, backend: str, seed: int = 0,
                 class_names: Optional[List[str]] = None):
        super().__init__(samples, seed=seed, class_names=class_names)
        self.backend = backend

    def _decode(self, path: str, sampling: str, mode: str, clip_len: int, rate: int,
                rng: Optional[random.Random] = None, num_views: int = 1,
                view: Optional[int] = None) -> np.ndarray:
        """(S, F, H, W, 3) uint8 frames of the sampled views ((1, F, ...) for one `view`)."""
        with open_video(path, self.backend) as r:
            idx = sample_indices(sampling, mode, r.num_frames, clip_len, rate, rng, num_views)
            if view is not None:
                idx = idx[view:view + 1]
            frames = r.get_frames(idx.reshape(-1))
        return frames.reshape(idx.shape + frames.shape[1:])


class _Scanned(_VideoDataset):
    """Evaluation datasets: unreadable videos are excluded by `scan()`, never replaced."""

    def __init__(self, samples: Sequence[Sample], **kwargs):
        super().__init__(samples, **kwargs)
        self.readable = list(range(len(self.samples)))  # list indices of the videos that have items
        self.excluded: List[Tuple[int, str, str]] = []

    def scan(self, workers: int = 0, progress: bool = False) -> List[Tuple[int, str, str]]:
        """Exclude unreadable videos; returns and stores (list index, path, reason)."""
        bad = scan_videos([s.path for s in self.samples], self.backend, workers, progress=progress)
        self.excluded = [(i, self.samples[i].path, bad[i]) for i in sorted(bad)]
        self.readable = [i for i in range(len(self.samples)) if i not in bad]
        return self.excluded


class _Training(_VideoDataset):
    """Training datasets: bad-file replacement and counting (see the module docstring)."""

    def __init__(self, samples: Sequence[Sample], *, max_bad_fraction: float, **kwargs):
        super().__init__(samples, **kwargs)
        self.max_bad_fraction = max_bad_fraction
        self._bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()
        self._replaced = torch.zeros(_MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

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


class PretrainDataset(_Training):
    """Dense clips (stride `sampling_rate`) with `num_sample` augmentations of one decode;
    an item is the stacked clips (num_sample, C, T, H, W)."""

    def __init__(self, samples: Sequence[Sample], *, num_frames: int, sampling_rate: int,
                 transform: Callable, num_sample: int = 1, backend: str = DEFAULT_BACKEND,
                 seed: int = 0, max_bad_fraction: float = 0.05):
        super().__init__(samples, backend=backend, seed=seed, max_bad_fraction=max_bad_fraction)
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        self.transform, self.num_sample = transform, num_sample

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = sample_rng(self.seed, self.epoch, index)

        def load(i: int) -> torch.Tensor:
            frames = self._decode(self.samples[i].path, "dense", "train", self.num_frames,
                                  self.sampling_rate, rng)[0]
            return torch.stack([self.transform(frames, rng) for _ in range(self.num_sample)])

        return self._load_replacing(index, load)


class VideoTrainDataset(_Training):
    """Classification training clips: random sampling (`sampling` 'dense' or 'segment') and
    augmentation, `num_sample` augmentations of one decode; bad files replaced."""

    def __init__(self, samples: Sequence[Sample], *, sampling: str, num_frames: int, sampling_rate: int,
                 transform: Callable, num_sample: int = 1, backend: str = DEFAULT_BACKEND, seed: int = 0,
                 max_bad_fraction: float = 0.05, class_names: Optional[List[str]] = None):
        super().__init__(samples, backend=backend, seed=seed, max_bad_fraction=max_bad_fraction,
                         class_names=class_names)
        self.sampling, self.num_frames, self.sampling_rate = sampling, num_frames, sampling_rate
        self.transform, self.num_sample = transform, num_sample

    def __getitem__(self, index: int):
        rng = sample_rng(self.seed, self.epoch, index)

        def load(i: int):
            s = self.samples[i]
            frames = self._decode(s.path, self.sampling, "train", self.num_frames, self.sampling_rate, rng)[0]
            if self.num_sample == 1:
                return self.transform(frames, rng), s.label
            clips = torch.stack([self.transform(frames, rng) for _ in range(self.num_sample)])
            return clips, torch.full((self.num_sample,), s.label, dtype=torch.int64)

        return self._load_replacing(index, load)


class VideoValDataset(_Scanned):
    """Validation clips: the deterministic view of every readable video (the centre clip for
    'dense' sampling, the segment centres for 'segment')."""

    def __init__(self, samples: Sequence[Sample], *, sampling: str, num_frames: int, sampling_rate: int,
                 transform: Callable, backend: str = DEFAULT_BACKEND, class_names: Optional[List[str]] = None):
        super().__init__(samples, backend=backend, class_names=class_names)
        self.sampling, self.num_frames, self.sampling_rate = sampling, num_frames, sampling_rate
        self.transform = transform

    def __len__(self) -> int:
        return len(self.readable)

    def __getitem__(self, index: int):
        s = self.samples[self.readable[index]]
        frames = self._decode(s.path, self.sampling, "val", self.num_frames, self.sampling_rate)[0]
        return self.transform(frames), s.label


class VideoTestDataset(_Scanned):
    """Multi-view test: one item per (video, temporal view, spatial view), in that order, so a
    distributed sampler can split views. Items: (clip, label, video_index, temporal_view,
    spatial_view) with video_index the line's position in the list (0-based, blank lines not
    counted). The spatial views of one temporal view are consecutive and reuse the worker's
    last decode; `factory.build_loader` shards the items contiguously (`PaddedContiguousSampler`)
    for the same reason."""

    def __init__(self, samples: Sequence[Sample], *, sampling: str, num_frames: int,
                 sampling_rate: int, num_temporal_views: int, num_spatial_crops: int,
                 transform: EvalTransform, backend: str = DEFAULT_BACKEND, class_names: Optional[List[str]] = None):
        super().__init__(samples, backend=backend, class_names=class_names)
        if transform.num_crops != num_spatial_crops:
            raise ValueError(f"transform makes {transform.num_crops} crops, dataset expects {num_spatial_crops}")
        self.sampling, self.num_frames, self.sampling_rate = sampling, num_frames, sampling_rate
        self.num_temporal_views, self.num_spatial_crops = num_temporal_views, num_spatial_crops
        self.transform = transform
        self._cache: Tuple[Optional[Tuple[int, int]], Optional[torch.Tensor]] = (None, None)

    @property
    def views_per_video(self) -> int:
        return self.num_temporal_views * self.num_spatial_crops

    def __len__(self) -> int:
        return len(self.readable) * self.views_per_video

    def video_of(self, index: int) -> int:
        """The video index (line in the list) of item `index`."""
        return self.readable[index // self.views_per_video]

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
        return [(v, t, s) for v in self.readable
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


class ImageDataset(_ListDataset):
    """Images from a list or folder; `with_label=False` returns the image only (pretraining).
    Augmentations are seeded per (seed, epoch, index) like the video datasets. Unlike the video
    clips, images leave the workers normalised (and erased) as float32: timm's image transforms
    do it there, and the steps only move and cast them (`device.to_model_input`)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, *, with_label: bool = True, seed: int = 0,
                 class_names: Optional[List[str]] = None):
        super().__init__(samples, seed=seed, class_names=class_names)
        self.transform, self.with_label = transform, with_label

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        s = self.samples[index]
        try:
            with Image.open(s.path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read image {s.path!r}: {e}") from None
        with seeded_globals(sample_seed(self.seed, self.epoch, index)):
            x = self.transform(img)
        return (x, s.label) if self.with_label else x
