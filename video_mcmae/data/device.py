"""The device side of the video input pipeline (docs/recipes.md#augmentation).

Video loaders deliver uint8 clips (B, C, T, H, W): a quarter of float32's bytes through the
worker queues, pinned memory and the host-to-device copy. Every consumer copies them to the
device as they are (`non_blocking`, so a copy from pinned memory overlaps) and normalises there,
on the whole batch in one fused op (`normalize_batch`). Random erasing (finetuning) needs the
normalised values, so it runs here too (`ClipErasing`), after normalisation and before mixup.

Image datasets (2D, timm's transforms) still deliver float batches normalised (and erased) in
the workers; `to_model_input` only moves and casts those.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import torch
from timm.data.random_erasing import RandomErasing

from .transforms import seeded_globals


@functools.lru_cache(maxsize=16)
def _affine(mean: Tuple[float, ...], std: Tuple[float, ...], ndim: int,
            device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(a, b) per channel, broadcastable over (B, C, ...), made once per device: a host-to-device
    copy every step would wait for the device."""
    shape = (1, -1) + (1,) * (ndim - 2)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(shape)
    return scale.to(device), shift.to(device)


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, ...) -> (x/255 − mean)/std in `dtype`, on x's device, computed in float32 as
    x·a + b (one fused multiply-add; a = 1/(255·std), b = −mean/std per channel)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize_batch takes uint8 clips, got {x.dtype}")
    scale, shift = _affine(tuple(map(float, mean)), tuple(map(float, std)), x.ndim, x.device)
    out = torch.addcmul(shift, x, scale)
    return out if dtype == torch.float32 else out.to(dtype)


def to_model_input(x: torch.Tensor, device: torch.device, mean: Sequence[float], std: Sequence[float],
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch from a loader -> the model's input on `device` in `dtype`: uint8 clips are copied as
    uint8 and normalised after the copy; float batches (image datasets) are copied and cast."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        return normalize_batch(x, mean, std, dtype)
    return x.to(dtype)


class StepSeeds:
    """One 62-bit seed per call for a step's random ops, repeatable per (the step generator's seed,
    call): the training loop re-seeds that generator by (seed, epoch, rank) every epoch, so the seeds
    repeat per (seed, epoch, rank, step), also after a resume at an epoch boundary. They come from a
    CPU generator re-seeded whenever the step generator's seed changes, not from the step generator
    itself: a draw on the device would make the host wait for the device every step."""

    def __init__(self):
        self._seed: Optional[int] = None
        self._cpu = torch.Generator()

    def __call__(self, generator: torch.Generator) -> int:
        seed = generator.initial_seed()
        if seed != self._seed:
            self._seed = seed
            self._cpu.manual_seed(seed)
        return int(torch.randint(0, 2**62, (1,), generator=self._cpu))


class ClipErasing:
    """timm's RandomErasing on a normalised clip batch (B, C, T, H, W), in place, on its device.

    The batch is seen as (B, C·T, H, W), so each clip gets its own draw (erased with probability
    `probability`, 1..`max_count` boxes) and a box covers all its frames. The draws come from
    Python's and torch's global generators seeded by `seed` inside `seeded_globals`, which puts
    their states back afterwards (dropout and drop-path draw as if erasing were off).
    """

    def __init__(self, probability: float, mode: str = "pixel", max_count: int = 1):
        if not 0 < probability <= 1:
            raise ValueError(f"erasing probability must be in (0, 1], got {probability}")
        self.probability, self.mode, self.max_count = probability, mode, max_count

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        if x.ndim != 5 or not x.is_floating_point():
            raise ValueError(f"ClipErasing takes normalised clips (B, C, T, H, W), got {x.dtype} {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        erase = RandomErasing(probability=self.probability, mode=self.mode, max_count=self.max_count,
                              num_splits=0, device=x.device)
        with seeded_globals(seed, x.device):
            erase(x.view(b, c * t, h, w))
        return x


def build_erasing(aug, dataset: str) -> Optional[ClipErasing]:
    """ClipErasing from the `aug` config section; None when `aug.reprob` is 0 and for image
    datasets (timm's image transforms erase in the workers)."""
    if aug.reprob <= 0 or dataset == "image":
        return None
    return ClipErasing(aug.reprob, aug.remode, aug.recount)
