"""Frame-index sampling (docs/recipes.md#frame-sampling, the "ours" variants) and test-crop placement.

Pure functions of the frame count N; random ones take a `random.Random`. Every function returns
int64 indices in [0, N). Notation: F frames per clip, r the frame stride.

Dense sampling (Kinetics, and pretraining on any dataset): frames start + k·r, k < F, so a clip
spans (F − 1)·r + 1 frames with an exact stride. When N is shorter than that span the clip starts
at 0 and the last reachable frame on the stride grid, r·⌊(N − 1)/r⌋, repeats.

Segment sampling (SSv2): N is cut into F segments. Training takes a random frame of each of the
N // F-long segments; when N < F it takes round(linspace(0, N − 1, F)) (halves round up).
Validation and test use tick = N / F: test view v of S takes ⌊tick·(k + v/S)⌋ (for S = 2: the
segment starts and the segment centres, as the reference); S = 1 and validation take the segment
centres ⌊tick·(k + ½)⌋. These stay inside [0, N) for any N ≥ 1, short videos included.
"""
from __future__ import annotations

import random
from typing import List, Tuple

import numpy as np

# The frame sampling of each video dataset kind (`data.dataset`); image datasets have none.
DATASET_SAMPLING = {"k400": "dense", "ssv2": "segment"}


def _check(num_frames: int, clip_len: int, rate: int = 1) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if clip_len <= 0 or rate <= 0:
        raise ValueError(f"clip length and sampling rate must be positive, got {clip_len} and {rate}")


def clip_span(clip_len: int, rate: int) -> int:
    """Frames covered by a dense clip: (F − 1)·r + 1."""
    return (clip_len - 1) * rate + 1


def dense_clip(num_frames: int, clip_len: int, rate: int, start: int) -> np.ndarray:
    """start + k·r, with the last reachable frame repeating past the end of the video."""
    _check(num_frames, clip_len, rate)
    reachable = (num_frames - 1 - start) // rate
    steps = np.minimum(np.arange(clip_len), reachable)
    return (start + steps * rate).astype(np.int64)


def dense_train_indices(num_frames: int, clip_len: int, rate: int, rng: random.Random) -> np.ndarray:
    """Random start, uniform in [0, N − span] (0 for short videos)."""
    _check(num_frames, clip_len, rate)
    max_start = max(num_frames - clip_span(clip_len, rate), 0)
    return dense_clip(num_frames, clip_len, rate, rng.randint(0, max_start))


def dense_center_indices(num_frames: int, clip_len: int, rate: int) -> np.ndarray:
    """The centre clip (validation, and the single view of a 1-view test)."""
    _check(num_frames, clip_len, rate)
    max_start = max(num_frames - clip_span(clip_len, rate), 0)
    return dense_clip(num_frames, clip_len, rate, max_start // 2)


def dense_test_indices(num_frames: int, clip_len: int, rate: int, num_views: int) -> np.ndarray:
    """(S, F) indices: view v starts at ⌊v·(N − span)/(S − 1)⌋; S = 1 is the centre clip."""
    _check(num_frames, clip_len, rate)
    if num_views <= 0:
        raise ValueError(f"number of temporal views must be positive, got {num_views}")
    if num_views == 1:
        return dense_center_indices(num_frames, clip_len, rate)[None]
    max_start = max(num_frames - clip_span(clip_len, rate), 0)
    starts = [v * max_start // (num_views - 1) for v in range(num_views)]
    return np.stack([dense_clip(num_frames, clip_len, rate, s) for s in starts])


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def segment_train_indices(num_frames: int, num_segments: int, rng: random.Random) -> np.ndarray:
    """A random frame inside each of F segments of length N // F."""
    _check(num_frames, num_segments)
    avg = num_frames // num_segments
    if avg == 0:
        return _round_half_up(np.linspace(0, num_frames - 1, num_segments))
    return np.array([k * avg + rng.randrange(avg) for k in range(num_segments)], dtype=np.int64)


def segment_test_indices(num_frames: int, num_segments: int, num_views: int) -> np.ndarray:
    """(S, F) indices: view v takes ⌊tick·(k + v/S)⌋; S = 1 takes the segment centres."""
    _check(num_frames, num_segments)
    if num_views <= 0:
        raise ValueError(f"number of temporal views must be positive, got {num_views}")
    tick = num_frames / num_segments
    k = np.arange(num_segments)
    shifts = [0.5] if num_views == 1 else [v / num_views for v in range(num_views)]
    return np.stack([np.floor(tick * (k + s)).astype(np.int64) for s in shifts])


def segment_center_indices(num_frames: int, num_segments: int) -> np.ndarray:
    """Segment centres (validation)."""
    return segment_test_indices(num_frames, num_segments, 1)[0]


def spatial_crop_offsets(height: int, width: int, crop_size: int, num_crops: int) -> List[Tuple[int, int]]:
    """(top, left) of C square crops spread evenly along the long side, centred on the short one.

    C = 1 is the centre crop; C = 3 gives left/centre/right (or top/centre/bottom).
    """
    if num_crops <= 0:
        raise ValueError(f"number of spatial crops must be positive, got {num_crops}")
    if crop_size > min(height, width):
        raise ValueError(f"crop {crop_size} larger than the frame {height}x{width}")
    spare_h, spare_w = height - crop_size, width - crop_size
    if num_crops == 1:
        return [(spare_h // 2, spare_w // 2)]
    spread = [c * max(spare_h, spare_w) // (num_crops - 1) for c in range(num_crops)]
    if height > width:
        return [(s, spare_w // 2) for s in spread]
    return [(spare_h // 2, s) for s in spread]


def sample_indices(
    sampling: str,
    mode: str,
    num_frames: int,
    clip_len: int,
    rate: int,
    rng: random.Random = None,
    num_views: int = 1,
) -> np.ndarray:
    """(S, F) indices for `sampling` in {'dense', 'segment'} and `mode` in {'train', 'val', 'test'}.

    'train' needs `rng`; 'val' is one deterministic view; 'test' gives `num_views` views.
    `rate` is ignored by segment sampling.
    """
    if sampling not in ("dense", "segment"):
        raise ValueError(f"unknown sampling {sampling!r}; use 'dense' or 'segment'")
    if mode == "train":
        if rng is None:
            raise ValueError("training sampling needs a random.Random")
        if sampling == "dense":
            return dense_train_indices(num_frames, clip_len, rate, rng)[None]
        return segment_train_indices(num_frames, clip_len, rng)[None]
    if mode == "val":
        num_views = 1
    elif mode != "test":
        raise ValueError(f"unknown sampling mode {mode!r}; use 'train', 'val' or 'test'")
    if sampling == "dense":
        return dense_test_indices(num_frames, clip_len, rate, num_views)
    return segment_test_indices(num_frames, clip_len, num_views)
