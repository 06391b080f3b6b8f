import random

import numpy as np
import pytest
import torch

from video_mcmae.data.device import normalize_batch
from video_mcmae.data.transforms import (
    EvalTransform,
    PretrainTransform,
    TrainTransform,
    VideoMixup,
    allows_flip,
    multi_scale_crop_params,
    random_resized_crop_params,
)

MEAN, STD = [0.45] * 3, [0.225] * 3


def marker_clip(t=8, h=48, w=64):
    """Grey frames with a red block in the top-left quarter."""
    frames = np.full((t, h, w, 3), 90, np.uint8)
    frames[:, : h // 3, : w // 3] = (255, 0, 0)
    return frames


def red_on_left(x):
    red = x[0].float().mean(0)  # (H, W) of the red channel
    half = red.shape[1] // 2
    return bool(red[:, :half].mean() > red[:, half:].mean())


def test_output_format():
    frames = np.random.default_rng(0).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    x = PretrainTransform(32)(frames, random.Random(0))
    assert x.shape == (3, 8, 32, 32) and x.dtype == torch.uint8
    plain = frames[:, :32, :32].astype(np.float32) / 255
    y = EvalTransform(32, 32)(np.ascontiguousarray(frames[:, :32, :32]))
    assert y.dtype == torch.uint8
    expected = (torch.from_numpy(plain).permute(3, 0, 1, 2) - 0.45) / 0.225
    assert torch.allclose(normalize_batch(y[None], MEAN, STD)[0], expected, atol=1e-5)


def test_no_flip_for_ssv2():
    assert not allows_flip("ssv2") and allows_flip("k400")
    frames = marker_clip()
    full = dict(scale=(1, 1), ratio=(64 / 48, 64 / 48))  # the whole frame: only the flip moves the marker
    ssv2 = TrainTransform(32, flip=allows_flip("ssv2"), **full)
    k400 = TrainTransform(32, flip=allows_flip("k400"), **full)
    assert all(red_on_left(ssv2(frames, random.Random(s))) for s in range(40))
    flips = [not red_on_left(k400(frames, random.Random(s))) for s in range(40)]
    assert 5 < sum(flips) < 35


def test_rand_augment_one_draw_per_clip():
    frame = np.random.default_rng(1).integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    frames = np.repeat(frame, 8, axis=0)
    ra = TrainTransform(32, flip=True, rand_augment="rand-m7-n4-mstd0.5-inc1")
    plain = TrainTransform(32, flip=True)
    changed = 0
    for seed in range(6):
        x = ra(frames, random.Random(seed))
        assert torch.equal(x, x[:, :1].expand_as(x)), "frames got different RandAugment draws"
        changed += not torch.equal(x, plain(frames, random.Random(seed)))
    assert changed >= 4  # the ops do something


def test_rrc_and_multiscale_params_in_bounds():
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(48, 64, (0.08, 1), (3 / 4, 4 / 3), rng)
        assert 0 <= top <= 48 - h and 0 <= left <= 64 - w and h > 0 and w > 0
        top, left, h, w = multi_scale_crop_params(48, 64, 32, (1, 0.875, 0.75, 0.66), rng)
        assert h in (48, 42, 36, 32) and w in (48, 42, 36, 32)  # 0.66 -> 31, snapped to 32
        assert 0 <= top <= 48 - h and 0 <= left <= 64 - w
    # impossible scale range: centre fallback, aspect clamped to the ratio range
    assert random_resized_crop_params(10, 100, (1, 1), (1, 1), rng) == (0, 45, 10, 10)


def test_eval_spatial_crops():
    frames = np.zeros((4, 48, 96, 3), np.uint8)
    frames[:, :, :32] = 255  # the left third is white
    ev = EvalTransform(32, 32, num_crops=3)
    means = [ev(frames, s).float().mean().item() for s in range(3)]
    assert means[0] > means[1] > means[2]
    assert ev(frames, 0).shape == (3, 4, 32, 32)


def test_mixup_on_5d_batches_shares_the_cutmix_box():
    b, c, t, h, w = 4, 3, 6, 16, 16
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, c, t, h, w).contiguous()
    target = torch.arange(b)
    cutmix = VideoMixup(num_classes=5, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    torch.manual_seed(0)
    np.random.seed(0)
    mixed, soft = cutmix(x.clone(), target)
    assert mixed.shape == x.shape and soft.shape == (b, 5)
    changed = mixed != x  # (B, C, T, H, W)
    assert changed.any()
    assert torch.equal(changed, changed[:, :, :1].expand_as(changed)), "box differs across frames"
    # each frame's box covers the partner's share of the soft target (batch flipped: 0 <-> 3)
    assert soft[0, 3] > 0 and soft[0, 0] > 0
    assert changed[0, 0, 0].float().mean().item() == pytest.approx(soft[0, 3].item(), abs=1e-6)
    mix = VideoMixup(num_classes=5, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
    out, soft = mix(x.clone(), target)
    assert torch.allclose(soft.sum(1), torch.ones(b))
    with pytest.raises(ValueError, match="even batch"):
        mix(x[:3].clone(), target[:3])


def test_finetune_transform_is_seeded_and_leaves_the_frames():
    frames = np.random.default_rng(3).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    before = frames.copy()
    tf = TrainTransform(32, flip=True, rand_augment="rand-m7-n4-mstd0.5-inc1-p1.0")
    for seed in range(10):
        a, b = tf(frames, random.Random(seed)), tf(frames, random.Random(seed))
        assert torch.equal(a, b)
        assert not torch.equal(a, tf(frames, random.Random(seed + 100)))
    assert np.array_equal(frames, before)  # num_sample > 1 augments the same decoded frames again
    with pytest.raises(ValueError, match="aug.rand_augment='rand-m7-q3'"):
        TrainTransform(32, flip=True, rand_augment="rand-m7-q3")
