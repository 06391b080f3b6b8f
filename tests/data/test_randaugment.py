import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as timm_aa

from video_mcmae.data.randaugment import (
    GEOMETRIC,
    LEVEL_TO_ARG,
    RAND_INCREASING_OPS,
    RAND_OPS,
    RandAugment,
    parse_policy,
)

OP_NAMES = sorted(set(RAND_OPS) | set(RAND_INCREASING_OPS))
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
          "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}
PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@pytest.fixture(autouse=True)
def one_thread():
    """As in a DataLoader worker: small tensor ops on several threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FixedDraw:
    """A stand-in generator whose random() is fixed: 0.9 takes timm's negative sign, 0.2 not."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def make_frames(seed=0, t=2, h=60, w=84):
    """(T, H, W, 3) uint8 frames with gradients, flat blocks, a disc, sharp edges and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(t):
        img = np.stack([xx * 3 + 20 * k, yy * 4, (xx + yy) * 2], -1).astype(np.int64) % 256
        img[15 + k:40, 20:50] = (230, 40, 60)
        img[(yy - 30) ** 2 + (xx - 60 + 3 * k) ** 2 < 100] = (20, 200, 90)
        frames.append(np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def as_clip(frames):
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def timm_op(name, arg, frame, interpolation="bicubic"):
    if LEVEL_TO_ARG[name][0] == "Posterize" and arg <= 0:
        return np.zeros(frame.shape, int)  # keep no bit; Pillow >= 10 refuses bits=0 instead
    args = () if arg is None else (arg,)
    img = timm_aa.NAME_TO_OP[name](Image.fromarray(frame), *args, fillcolor=(128, 128, 128),
                                   resample=PIL_FILTERS[interpolation])
    return np.asarray(img).astype(int)


@pytest.mark.parametrize("config", ["rand-m7-n4-mstd0.5-inc1", "rand-m9-mstd0.5-inc1", "rand-m9-n3-mstd0.5",
                                    "rand-m5-n2-p0.7-mstd101", "rand-m12-mmax15-n1-inc0"])
def test_policy_matches_timm(config):
    reference = timm_aa.rand_augment_transform(config, {})
    policy = parse_policy(config)
    assert list(policy.op_names) == [op.name for op in reference.ops]
    assert policy.num_ops == reference.num_layers
    op = reference.ops[0]
    assert (policy.magnitude, policy.prob, policy.magnitude_std) == (op.magnitude, op.prob, op.magnitude_std)
    assert policy.magnitude_max == (op.magnitude_max or 10)


@pytest.mark.parametrize("config", ["auto-m9", "rand-m9-x3", "rand-mfoo", "rand-m7.5", "rand-tweights"])
def test_bad_config_is_one_clear_error(config):
    with pytest.raises(ValueError, match="RandAugment config"):
        parse_policy(config)


@pytest.mark.parametrize("name", OP_NAMES)
def test_level_to_arg_matches_timm(name, monkeypatch):
    base, level_to_arg = LEVEL_TO_ARG[name]
    assert base in timm_aa.NAME_TO_OP
    for negate in (False, True):
        monkeypatch.setattr(timm_aa, "_randomly_negate", (lambda v: -v) if negate else (lambda v: v))
        for magnitude in np.linspace(0, 10, 41):
            expected = timm_aa.LEVEL_TO_ARG[name]
            if expected is None:
                assert level_to_arg is None
                continue
            ours = level_to_arg(float(magnitude), FixedDraw(0.9 if negate else 0.2), 0.45)
            assert ours == pytest.approx(expected(float(magnitude), {"translate_pct": 0.45})[0], abs=1e-12)


def op_cases(name):
    """(timm name, base name, argument) at a few magnitudes, both signs for signed ops."""
    base, level_to_arg = LEVEL_TO_ARG[name]
    if level_to_arg is None:
        return [(name, base, None)]
    draws = (0.2, 0.9) if name in SIGNED else (0.2,)
    return [(name, base, level_to_arg(m, FixedDraw(d), 0.45)) for m in (2.0, 6.5, 10.0) for d in draws]


@pytest.mark.parametrize("name", [n for n in OP_NAMES if LEVEL_TO_ARG[n][0] not in GEOMETRIC])
def test_colour_ops_match_timm_pil(name):
    frames = make_frames()
    ra = RandAugment("rand-m9")
    # at most 1 level apart: PIL rounds its grey where torchvision truncates (colour), blends in
    # another order (sharpness); contrast's mean from the channel means can round the other way
    tolerance = 1 if LEVEL_TO_ARG[name][0] in ("Color", "Contrast", "Sharpness") else 0
    for timm_name, base, arg in op_cases(name):
        out = ra(as_clip(frames), [(base, arg)]).permute(0, 2, 3, 1).numpy().astype(int)
        for t, frame in enumerate(frames):  # one draw for the clip: each frame as PIL on its own
            diff = np.abs(out[t] - timm_op(timm_name, arg, frame))
            assert diff.max() <= tolerance, (timm_name, arg, t, diff.max())


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("name", [n for n in RAND_OPS if n in GEOMETRIC])
def test_geometric_ops_match_timm_pil(name, interpolation):
    frames = make_frames()
    ra = RandAugment("rand-m9", interpolation=interpolation)
    for timm_name, base, arg in op_cases(name):
        out = ra(as_clip(frames), [(base, arg)]).permute(0, 2, 3, 1).numpy().astype(int)
        for t, frame in enumerate(frames):
            diff = np.abs(out[t] - timm_op(timm_name, arg, frame, interpolation))
            if name == "Rotate" and interpolation == "bicubic":
                # grid_sample's bicubic kernel (a = -0.75) is not PIL's (a = -1): apart at edges and noise
                assert diff.mean() < 0.5 and (diff > 2).mean() < 0.05, (arg, diff.mean(), (diff > 2).mean())
            else:  # same filter and edge rule; float32 vs PIL's double rounding
                assert diff.max() <= 1, (timm_name, arg, t, diff.max())


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("name", ["ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_shifts_inside_the_frame_match_timm_pil(name, interpolation):
    """Boxes inside the frame: translations read a slice of their region (no gather), shears
    start their lines part-way; both must still be PIL's result cropped."""
    frames = make_frames(h=90, w=120)
    ra = RandAugment("rand-m9", interpolation=interpolation)
    for box in [(20, 30, 40, 50), (5, 60, 70, 41), (33, 2, 9, 100)]:
        top, left, h, w = box
        for timm_name, base, arg in op_cases(name):
            for factor in (1.0, 0.1):  # small shifts keep every tap inside the box's region
                out = ra(as_clip(frames), [(base, arg * factor)], box).permute(0, 2, 3, 1).numpy().astype(int)
                for t, frame in enumerate(frames):
                    expected = timm_op(timm_name, arg * factor, frame, interpolation)[top:top + h, left:left + w]
                    assert np.abs(out[t] - expected).max() <= 1, (timm_name, arg * factor, box, t)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_region_is_the_crop_of_the_full_result(interpolation):
    frames = as_clip(make_frames(t=3))
    ra = RandAugment("rand-m9-n4-mstd0.5-inc1-p1.0", interpolation=interpolation)
    h, w = frames.shape[-2:]
    differing = total = 0
    for seed in range(120):
        rng = random.Random(seed)
        ops = ra.draw(rng)
        top, left = rng.randrange(h - 8), rng.randrange(w - 8)
        box = (top, left, rng.randint(8, h - top), rng.randint(8, w - left))
        region = ra(frames, ops, box)
        full = ra(frames, ops)[..., top:top + box[2], left:left + box[3]]
        assert region.shape == full.shape
        diff = (region.int() - full.int()).abs()
        assert diff.max() <= 2, (ops, box)  # sampling positions rounded differently in float32
        differing += int((diff > 0).sum())
        total += diff.numel()
    assert differing / total < 1e-3


def test_one_draw_applies_to_every_frame():
    frame = make_frames(t=1)
    clip = as_clip(np.repeat(frame, 5, axis=0))
    ra = RandAugment("rand-m9-n4-mstd0.5-inc1-p1.0")
    for seed in range(30):
        out = ra(clip, ra.draw(random.Random(seed)), (4, 6, 40, 50))
        assert torch.equal(out, out[:1].expand_as(out))


def test_draws_follow_the_policy():
    ra = RandAugment("rand-m7-n4-mstd0.5-inc1")
    draws = [ra.draw(random.Random(seed)) for seed in range(4000)]
    assert np.mean([len(d) for d in draws]) == pytest.approx(2.0, abs=0.08)  # 4 ops, p 0.5
    names = Counter(name for d in draws for name, _ in d)
    assert set(names) == {LEVEL_TO_ARG[n][0] for n in RAND_INCREASING_OPS}
    assert max(names.values()) < 1.3 * min(names.values())  # uniform choice
    angles = np.array([arg for d in draws for name, arg in d if name == "Rotate"])
    assert (angles > 0).mean() == pytest.approx(0.5, abs=0.08)
    assert np.abs(angles).mean() == pytest.approx(21.0, abs=0.5)  # 7/10 of 30 degrees
    assert np.abs(angles).std() == pytest.approx(1.5, abs=0.3)  # mstd 0.5 -> 1.5 degrees
    bits = Counter(arg for d in draws for name, arg in d if name == "Posterize")
    assert set(bits) == {1, 2} and bits[1] < bits[2]  # 4 - int(m·0.4): m >= 7.5 keeps 1 bit

    assert all(len(RandAugment("rand-m7-n3-p1.0").draw(random.Random(s))) == 3 for s in range(50))
    uniform = RandAugment("rand-m8-n1-p1.0-mstd101")
    shears = np.abs([arg for s in range(3000) for name, arg in uniform.draw(random.Random(s))
                     if name in ("ShearX", "ShearY")])
    assert shears.max() <= 0.24 and shears.mean() == pytest.approx(0.12, abs=0.01)  # m uniform in [0, 8]


def test_same_generator_state_same_clip():
    frames = as_clip(make_frames(t=3))
    ra = RandAugment("rand-m9-n4-mstd0.5-inc1")
    a = ra(frames, ra.draw(random.Random(7)), (3, 5, 40, 60))
    b = ra(frames, ra.draw(random.Random(7)), (3, 5, 40, 60))
    assert torch.equal(a, b)
    assert frames.dtype == torch.uint8 and torch.equal(frames, as_clip(make_frames(t=3)))  # input untouched
