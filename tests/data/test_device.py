"""uint8 clips from the transforms, normalised (and erased) on the device: the same values as the
float path the workers used to produce, and random erasing's semantics on batches."""
import random

import numpy as np
import pytest
import timm
import torch
from einops import rearrange
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from video_mcmae.data.datasets import sample_rng
from video_mcmae.data.device import ClipErasing, StepSeeds, build_erasing, normalize_batch, to_model_input
from video_mcmae.data.sampling import spatial_crop_offsets
from video_mcmae.data.transforms import (
    EvalTransform,
    PretrainTransform,
    TrainTransform,
    multi_scale_crop_params,
    random_resized_crop_params,
    to_tensor,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- the float path before clips left the workers as uint8 (kept here as the reference) ------------
def old_normalize(clip, mean, std):
    """uint8 (T, C, H, W) -> float32 (C, T, H, W): the workers' normalisation before this change."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(-1, 1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(-1, 1, 1, 1)
    t, c, h, w = clip.shape
    out = torch.empty((c, t, h, w), dtype=torch.float32)
    torch.mul(clip.permute(1, 0, 2, 3), scale, out=out)
    return out.add_(shift)


def old_pretrain(tf, frames, rng):
    clip = to_tensor(frames)
    top, left, h, w = multi_scale_crop_params(*clip.shape[-2:], tf.input_size, tf.scales, rng)
    clip = TF.resized_crop(clip, top, left, h, w, [tf.input_size] * 2,
                           interpolation=InterpolationMode.BILINEAR, antialias=True)
    return old_normalize(clip, MEAN, STD)


def old_train(tf, frames, rng):
    clip = to_tensor(frames)
    ops = tf.rand_augment.draw(rng) if tf.rand_augment is not None else []
    top, left, h, w = box = random_resized_crop_params(*clip.shape[-2:], tf.scale, tf.ratio, rng)
    clip = tf.rand_augment(clip, ops, box) if ops else clip[..., top:top + h, left:left + w]
    clip = TF.resize(clip, [tf.input_size] * 2, interpolation=InterpolationMode.BILINEAR, antialias=True)
    if tf.flip and rng.random() < 0.5:
        clip = clip.flip(-1)
    return old_normalize(clip, MEAN, STD)


def old_eval(tf, frames, view):
    clip = tf.resize(frames)
    top, left = spatial_crop_offsets(*clip.shape[-2:], tf.input_size, tf.num_crops)[view]
    return old_normalize(clip[..., top:top + tf.input_size, left:left + tf.input_size], MEAN, STD)


def frames_of(index, t=8, h=48, w=64):
    return np.random.default_rng(index).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["pretrain", "train", "train_randaugment"])
def test_training_transforms_normalised_on_the_device_equal_the_old_float_path(kind):
    if kind == "pretrain":
        tf, old = PretrainTransform(32), old_pretrain
    else:
        tf = TrainTransform(32, flip=True, rand_augment="rand-m7-n4-mstd0.5-inc1" if kind.endswith("randaugment") else "")
        old = old_train
    for index in range(6):
        frames = frames_of(index)
        new = tf(frames, sample_rng(0, 3, index))
        assert new.dtype == torch.uint8 and new.shape == (3, 8, 32, 32)
        torch.testing.assert_close(normalize_batch(new[None], MEAN, STD)[0], old(tf, frames, sample_rng(0, 3, index)),
                                   rtol=0, atol=1e-6)


def test_eval_transform_normalised_on_the_device_equals_the_old_float_path():
    tf = EvalTransform(32, 40, num_crops=3)
    frames = frames_of(7)
    for view in range(3):
        new = tf(frames, view)
        assert new.dtype == torch.uint8
        torch.testing.assert_close(normalize_batch(new[None], MEAN, STD)[0], old_eval(tf, frames, view),
                                   rtol=0, atol=1e-6)


def test_normalize_batch_dtypes_and_layouts():
    x = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8)
    ref = torch.stack([old_normalize(c.permute(1, 0, 2, 3), MEAN, STD) for c in x])
    half = normalize_batch(x, MEAN, STD, torch.bfloat16)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half, ref.to(torch.bfloat16), rtol=0, atol=0.02)
    image = normalize_batch(x[:, :, 0], MEAN, STD)  # (B, C, H, W): channels are dim 1 too
    torch.testing.assert_close(image, ref[:, :, 0], rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(ref, MEAN, STD)
    # float batches (image datasets, normalised in the workers) are moved and cast only
    assert torch.equal(to_model_input(ref, torch.device("cpu"), MEAN, STD), ref)
    torch.testing.assert_close(to_model_input(x, torch.device("cpu"), MEAN, STD), ref, rtol=0, atol=1e-6)


def test_the_reconstruction_target_is_the_uint8_clip_over_255():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, data_mean=MEAN, data_std=STD)
    clip = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    target = model.target_pixels(normalize_batch(clip, MEAN, STD))
    expected = rearrange(clip.float() / 255, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw) c", pt=2, ph=16, pw=16)
    torch.testing.assert_close(target, expected, rtol=0, atol=1e-6)


def normalised_batch(b=4, t=4, h=32, w=32):
    return normalize_batch(torch.randint(0, 256, (b, 3, t, h, w), dtype=torch.uint8), MEAN, STD)


def test_erasing_one_box_per_clip_over_all_frames_and_nothing_else():
    x = normalised_batch(b=6)
    erased = ClipErasing(1.0, mode="const")(x.clone(), seed=5)
    changed = (erased != x).any(1)  # (B, T, H, W)
    assert all(changed[i].any() for i in range(6))
    assert torch.equal(changed, changed[:, :1].expand_as(changed)), "box differs across frames"
    for i in range(6):  # one rectangle per clip, zeros inside (const mode), the rest untouched
        rows, cols = changed[i, 0].any(1).nonzero().flatten(), changed[i, 0].any(0).nonzero().flatten()
        box = torch.zeros_like(changed[i, 0])
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(changed[i, 0], box)
        assert (erased[i][:, :, box] == 0).all()
        assert torch.equal(erased[i][:, :, ~box], x[i][:, :, ~box])
    assert not torch.equal(changed[0], changed[1])  # each clip draws its own box


def test_erasing_probability_seeding_and_the_global_generators():
    x = normalised_batch(b=400, t=2, h=16, w=16)
    erase = ClipErasing(0.25)  # pixel mode, the recipes' default
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    a = erase(x.clone(), seed=11)
    assert random.getstate() == state[0] and torch.equal(torch.get_rng_state(), state[2])
    assert (np.random.get_state()[1] == state[1][1]).all()
    hit = (a != x).flatten(1).any(1).float().mean().item()
    assert 0.18 < hit < 0.32
    assert torch.equal(erase(x.clone(), seed=11), a)
    assert not torch.equal(erase(x.clone(), seed=12), a)
    with pytest.raises(ValueError, match="normalised clips"):
        erase(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), seed=0)


def test_step_seeds_repeat_per_generator_seed_and_call_and_build_erasing():
    seeds, g = StepSeeds(), torch.Generator().manual_seed(3)
    epoch = [seeds(g) for _ in range(3)]
    assert len(set(epoch)) == 3
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())  # the step generator is not drawn
    g.manual_seed(4)  # the next epoch
    assert seeds(g) not in epoch
    g.manual_seed(3)  # a resumed run re-seeds like the first epoch, with fresh StepSeeds
    assert [StepSeeds()(g)] == epoch[:1]
    fresh, g3 = StepSeeds(), torch.Generator().manual_seed(3)
    assert [fresh(g3) for _ in range(3)] == epoch

    class Aug:
        reprob, remode, recount = 0.25, "pixel", 1

    assert isinstance(build_erasing(Aug, "k400"), ClipErasing)
    assert build_erasing(Aug, "image") is None  # timm's image transforms erase in the workers
    Aug.reprob = 0.0
    assert build_erasing(Aug, "ssv2") is None
