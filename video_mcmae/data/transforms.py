"""Clip transforms (docs/recipes.md#augmentation): decoded uint8 frames (T, H, W, 3) -> uint8 (C, T, H, W).

Geometry and flips run on uint8 torch tensors (T, C, H, W) with torchvision.transforms.v2.functional,
one call for the whole clip. Random parameters come from a per-sample `random.Random`, so a clip
depends only on (seed, epoch, index), not on the worker.

Clips leave the workers as uint8; normalisation and random erasing run in the training and
evaluation steps, on the device, on the whole batch (`device.py`). The 2D image transforms
(`image_*_transform`, timm's) still return normalised float images.

RandAugment is timm's policy run on the clip tensor (`randaugment.RandAugment`): one draw per
clip, the same ops and magnitudes on every frame, computed only where the random resized crop
that follows looks.
"""
from __future__ import annotations

import contextlib
import math
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from timm.data import create_transform
from timm.data.mixup import Mixup
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .randaugment import RandAugment
from .sampling import spatial_crop_offsets

DATASET_KINDS = ("k400", "ssv2", "image")


def allows_flip(dataset: str) -> bool:
    """Horizontal flips are label-preserving except on SSv2 (its labels say left/right)."""
    if dataset not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {dataset!r}; use one of {', '.join(DATASET_KINDS)}")
    return dataset != "ssv2"


@contextlib.contextmanager
def seeded_globals(seed: int, device: Optional[torch.device] = None):
    """Seed Python's, NumPy's and torch's CPU generators (and the generator of a CUDA `device`) for
    code that only uses the globals (timm); the previous states come back afterwards."""
    gpu = torch.device(device) if device is not None and torch.device(device).type == "cuda" else None
    if gpu is not None and gpu.index is None:
        gpu = torch.device("cuda", torch.cuda.current_device())
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    gpu_state = torch.cuda.get_rng_state(gpu) if gpu is not None else None
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        if gpu is not None:
            torch.cuda.default_generators[gpu.index].manual_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu_state, gpu)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) ndarray -> uint8 (T, 3, H, W) tensor (no copy)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def channels_first(clip: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) -> (C, T, H, W), the clip layout the models take (a view: collating copies)."""
    return clip.permute(1, 0, 2, 3)


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (…, H, W) so the short side is `size`, keeping the aspect ratio (bilinear)."""
    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    if h <= w:
        new_h, new_w = size, max(int(round(w * size / h)), size)
    else:
        new_h, new_w = max(int(round(h * size / w)), size), size
    return TF.resize(clip, [new_h, new_w], interpolation=InterpolationMode.BILINEAR, antialias=True)


def random_resized_crop_params(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], rng: random.Random
) -> Tuple[int, int, int, int]:
    """(top, left, h, w): area fraction uniform in `scale`, aspect log-uniform in `ratio`,
    10 tries, then the largest centred crop with the aspect clamped into `ratio`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def multi_scale_crop_params(
    height: int, width: int, input_size: int, scales: Sequence[float], rng: random.Random
) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of the reference pretraining crop.

    Sides int(min(H, W)·s) for s in `scales` (snapped to `input_size` within 3 px, never past
    the frame), width/height scale indices differing by at most 1, and the offset one of 13
    fixed positions on a grid with steps (W − w)//4, (H − h)//4.
    """
    base = min(height, width)
    sides = [input_size if abs(int(base * s) - input_size) < 3 else int(base * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    h, w = rng.choice(pairs)
    h, w = min(h, height), min(w, width)
    hs, ws = (height - h) // 4, (width - w) // 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2),
            (2, 0), (2, 4), (4, 2), (0, 2),
            (1, 1), (1, 3), (3, 1), (3, 3)]  # (row, col) in steps: corners, centre, edges, quarters
    gy, gx = rng.choice(grid)
    return gy * hs, gx * ws, h, w


class PretrainTransform:
    """Multi-scale crop, resize to `input_size`; no flip, no colour jitter (reference)."""

    def __init__(self, input_size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66)):
        self.input_size, self.scales = input_size, tuple(scales)

    def __call__(self, frames: np.ndarray, rng: random.Random) -> torch.Tensor:
        clip = to_tensor(frames)
        top, left, h, w = multi_scale_crop_params(*clip.shape[-2:], self.input_size, self.scales, rng)
        clip = TF.resized_crop(clip, top, left, h, w, [self.input_size] * 2,
                               interpolation=InterpolationMode.BILINEAR, antialias=True)
        return channels_first(clip)


class TrainTransform:
    """Finetuning: RandAugment (one draw per clip) -> random resized crop -> flip. Normalisation
    and random erasing follow in the training step (`device.ClipErasing`).

    `flip` comes from the dataset kind (`allows_flip`), never from a string option.
    """

    def __init__(self, input_size: int, *, flip: bool, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), rand_augment: str = "", interpolation: str = "bicubic"):
        self.input_size = input_size
        self.flip, self.scale, self.ratio = flip, tuple(scale), tuple(ratio)
        self.rand_augment = None
        if rand_augment:
            try:
                self.rand_augment = RandAugment(rand_augment, translate_pct=0.45, fill=128,
                                                interpolation=interpolation)
            except ValueError as e:
                raise ValueError(f"aug.rand_augment={rand_augment!r} is not a timm RandAugment spec "
                                 f"like 'rand-m7-n4-mstd0.5-inc1' ({e})") from None

    def __call__(self, frames: np.ndarray, rng: random.Random) -> torch.Tensor:
        clip = to_tensor(frames)
        ops = self.rand_augment.draw(rng) if self.rand_augment is not None else []
        box = random_resized_crop_params(*clip.shape[-2:], self.scale, self.ratio, rng)
        top, left, h, w = box
        clip = self.rand_augment(clip, ops, box) if ops else clip[..., top:top + h, left:left + w]
        clip = TF.resize(clip, [self.input_size] * 2, interpolation=InterpolationMode.BILINEAR, antialias=True)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return channels_first(clip)


class EvalTransform:
    """Resize the short side to `short_side_size`, then crop spatial view `spatial_view` of
    `num_crops` squares of `input_size` (spread along the long side; 1 = centre)."""

    def __init__(self, input_size: int, short_side_size: int, num_crops: int = 1):
        if short_side_size < input_size:
            raise ValueError(f"short side {short_side_size} is smaller than the crop {input_size}")
        self.input_size, self.short_side_size, self.num_crops = input_size, short_side_size, num_crops

    def resize(self, frames: np.ndarray) -> torch.Tensor:
        return resize_short_side(to_tensor(frames), self.short_side_size)

    def crop(self, clip: torch.Tensor, spatial_view: int = 0) -> torch.Tensor:
        """Crop a clip returned by `resize`: uint8 (C, T, input_size, input_size)."""
        offsets = spatial_crop_offsets(*clip.shape[-2:], self.input_size, self.num_crops)
        top, left = offsets[spatial_view]
        return channels_first(clip[..., top:top + self.input_size, left:left + self.input_size])

    def __call__(self, frames: np.ndarray, spatial_view: int = 0) -> torch.Tensor:
        return self.crop(self.resize(frames), spatial_view)


class VideoMixup:
    """timm's Mixup/CutMix + label smoothing for clip batches (B, C, T, H, W).

    timm's batch-mode CutMix indexes the two dims after the channels, which for a 5-D batch
    are (T, H); the batch is therefore handed over as (B, C·T, H, W), so the CutMix box lands
    on (H, W) and is shared by all frames. Batches of images (4-D) pass through unchanged.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = "batch",
                 label_smoothing: float = 0.1):
        self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                           switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing,
                           num_classes=num_classes)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"mixup/cutmix needs an even batch, got {x.shape[0]}; "
                             "use an even optim.batch_size (and drop_last)")
        if x.ndim == 4:
            return self.mixup(x, target)
        b, c, t, h, w = x.shape
        flat, target = self.mixup(x.reshape(b, c * t, h, w), target)
        return flat.view(b, c, t, h, w), target


def build_mixup(aug, num_classes: int) -> Optional[VideoMixup]:
    """VideoMixup from the `aug` config section, or None when both alphas are 0."""
    if aug.mixup <= 0 and aug.cutmix <= 0:
        return None
    return VideoMixup(num_classes, aug.mixup, aug.cutmix, aug.mixup_prob, aug.mixup_switch_prob,
                      aug.mixup_mode, aug.smoothing)


def image_pretrain_transform(input_size: int, mean: Sequence[float], std: Sequence[float]):
    """2D ConvMAE pretraining: RandomResizedCrop(scale 0.2–1, bicubic), flip, normalise."""
    return T.Compose([
        T.RandomResizedCrop(input_size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def image_train_transform(input_size: int, mean: Sequence[float], std: Sequence[float], aug):
    """2D finetuning through timm's `create_transform` (RandAugment, erasing from `aug`)."""
    return create_transform(input_size, is_training=True, auto_augment=aug.rand_augment or None,
                            interpolation=aug.train_interpolation, re_prob=aug.reprob,
                            re_mode=aug.remode, re_count=aug.recount, scale=tuple(aug.crop_scale),
                            ratio=tuple(aug.crop_ratio), color_jitter=0.4, mean=tuple(mean), std=tuple(std))


def image_eval_transform(input_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875):
    """2D evaluation: resize to input_size/crop_pct, centre crop (timm's eval transform)."""
    return create_transform(input_size, is_training=False, interpolation="bicubic",
                            crop_pct=crop_pct, mean=tuple(mean), std=tuple(std))
