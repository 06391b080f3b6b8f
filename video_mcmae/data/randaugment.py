"""timm's RandAugment policy on uint8 clips (T, C, H, W): one draw per clip, every frame gets it.

`RandAugment(config)` reads timm's config string (`rand-m7-n4-mstd0.5-inc1`): `m` magnitude
(0-10), `n` ops per clip, `mstd` magnitude noise (gaussian per op application; > 100 means
uniform in [0, m]), `mmax` the magnitude clip (default 10), `p` probability of each op (default
0.5), `inc1` the ops whose severity increases with the magnitude. `draw(rng)` follows timm's
`RandAugment`/`AugmentOp`: n ops chosen uniformly with replacement from timm's list, each applied
with probability p, at the magnitude plus noise clipped to [0, mmax], mapped to the op argument
as timm does, with a random sign for rotate, shear, translate and the increasing enhancements.
Geometric ops fill with grey 128, timm's default (the reference recipe sets no image mean).

The ops run on the uint8 tensor and reproduce timm's PIL ops on single frames
(tests/data/test_randaugment.py): bit-exact or within 1 for the colour ops and for shear and
translation (PIL's filters: linear, or its bicubic with a = −1; PIL's edge rule: a point sampled
outside the frame takes the fill colour, one inside uses taps clamped to the frame edge, results
truncated). Rotation samples with `grid_sample` (bilinear: within 1 of PIL; bicubic: PyTorch's
a = −0.75 kernel, a few levels apart at sharp edges). torchvision.transforms.v2.functional does
invert and posterize; colour and sharpness repeat its float32 steps (same results) on planar
frame blocks, sharpness on the crop only with its rounded blur from integer 3x3 sums. The rest is
tensor code because it measured faster (16x320x427 clips, one core): look-up tables with np.take
for brightness, contrast, autocontrast and equalize (torch has no uint8 look-up), equalize's
histograms by PIL's C counter (3x faster than torch.bincount), bit arithmetic for solarize
(`torch.where` is ~5x slower on uint8), and shear/translation as 1-D interpolation along each row
or column: one uint8 gather of every output line's input run (a slice for a translation), then a
multiply-add per tap with per-line weights (2-3x cheaper than torchvision's affine, whose output
must also be the input's size). Float work runs in blocks of frames of about 1 MiB, so that its
several passes stay in cache (about twice as fast as passes over the whole clip), and is rounded
to uint8 in one numpy pass.

Only what the following random resized crop keeps is computed: `__call__(clip, ops, box)`
returns RandAugment(clip)[box], each op running on the region its successors need (the box,
grown by a geometric op's preimage and sharpness' 3x3 support; the whole frame before
autocontrast, equalize and contrast, whose statistics are per frame). The box holds 43% of a
frame on average for the finetuning crop scale (0.08, 1).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

Rect = Tuple[int, int, int, int]  # (top, left, height, width) in frame pixels
Op = Tuple[str, Optional[float]]  # (base op name, argument)

LEVEL_DENOM = 10.0  # magnitudes are on a 0-10 scale, as timm's _LEVEL_DENOM
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
            "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
            "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                       "TranslateXRel", "TranslateYRel")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
WHOLE_FRAME = ("AutoContrast", "Equalize", "Contrast")  # need statistics of the whole frame
INTERPOLATIONS = ("bilinear", "bicubic")
BLOCK_VALUES = 1 << 18  # float32 values worked on at a time (1 MiB)


def _negate_half(value: float, rng: random.Random) -> float:
    return -value if rng.random() > 0.5 else value


def _enhance(level: float, rng: random.Random, _pct: float) -> float:
    return level / LEVEL_DENOM * 1.8 + 0.1


def _enhance_increasing(level: float, rng: random.Random, _pct: float) -> float:
    return max(0.1, 1.0 + _negate_half(level / LEVEL_DENOM * 0.9, rng))


def _posterize(level: float, rng: random.Random, _pct: float) -> int:
    return int(level / LEVEL_DENOM * 4)


def _solarize(level: float, rng: random.Random, _pct: float) -> int:
    return min(256, int(level / LEVEL_DENOM * 256))


# name -> (base op, magnitude -> argument); magnitudes and signs as timm's LEVEL_TO_ARG
LEVEL_TO_ARG: Dict[str, Tuple[str, Optional[Callable]]] = {
    "AutoContrast": ("AutoContrast", None),
    "Equalize": ("Equalize", None),
    "Invert": ("Invert", None),
    "Rotate": ("Rotate", lambda m, rng, pct: _negate_half(m / LEVEL_DENOM * 30.0, rng)),
    "Posterize": ("Posterize", _posterize),
    "PosterizeIncreasing": ("Posterize", lambda m, rng, pct: 4 - _posterize(m, rng, pct)),
    "Solarize": ("Solarize", _solarize),
    "SolarizeIncreasing": ("Solarize", lambda m, rng, pct: 256 - _solarize(m, rng, pct)),
    "SolarizeAdd": ("SolarizeAdd", lambda m, rng, pct: min(128, int(m / LEVEL_DENOM * 110))),
    "Color": ("Color", _enhance),
    "ColorIncreasing": ("Color", _enhance_increasing),
    "Contrast": ("Contrast", _enhance),
    "ContrastIncreasing": ("Contrast", _enhance_increasing),
    "Brightness": ("Brightness", _enhance),
    "BrightnessIncreasing": ("Brightness", _enhance_increasing),
    "Sharpness": ("Sharpness", _enhance),
    "SharpnessIncreasing": ("Sharpness", _enhance_increasing),
    "ShearX": ("ShearX", lambda m, rng, pct: _negate_half(m / LEVEL_DENOM * 0.3, rng)),
    "ShearY": ("ShearY", lambda m, rng, pct: _negate_half(m / LEVEL_DENOM * 0.3, rng)),
    "TranslateXRel": ("TranslateXRel", lambda m, rng, pct: _negate_half(m / LEVEL_DENOM * pct, rng)),
    "TranslateYRel": ("TranslateYRel", lambda m, rng, pct: _negate_half(m / LEVEL_DENOM * pct, rng)),
}


@dataclass(frozen=True)
class Policy:
    magnitude: int = 10
    num_ops: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False

    @property
    def op_names(self) -> Tuple[str, ...]:
        return RAND_INCREASING_OPS if self.increasing else RAND_OPS


def parse_policy(config: str) -> Policy:
    """timm's `rand-...` config string -> Policy (sections m, n, p, mstd, mmax, inc, in any order)."""
    parts = config.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment config {config!r} must start with 'rand-', e.g. 'rand-m7-n4-mstd0.5-inc1'")
    values = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(\d.*)", part)
        if match is None:
            raise ValueError(f"RandAugment config {config!r}: unknown section {part!r}; use m<int>, "
                             "n<int>, p<float>, mstd<float>, mmax<int>, inc<0|1> (e.g. 'rand-m7-n4-mstd0.5-inc1')")
        key, text = match.groups()
        try:
            values[key] = float(text) if key in ("p", "mstd") else int(text)
        except ValueError:
            raise ValueError(f"RandAugment config {config!r}: section {part!r} needs a number after "
                             f"{key!r}") from None
    mstd = values.get("mstd", 0.0)
    return Policy(magnitude=values.get("m", 10), num_ops=values.get("n", 2), prob=values.get("p", 0.5),
                  magnitude_std=math.inf if mstd > 100 else mstd,
                  magnitude_max=values.get("mmax") or LEVEL_DENOM, increasing=bool(values.get("inc", 0)))


# ---- region bookkeeping -------------------------------------------------------------------

def _crop(x: torch.Tensor, x_rect: Rect, rect: Rect) -> torch.Tensor:
    top, left = rect[0] - x_rect[0], rect[1] - x_rect[1]
    return x[..., top:top + rect[2], left:left + rect[3]]


def _grow(rect: Rect, margin: int, size: Tuple[int, int]) -> Rect:
    top, left = max(rect[0] - margin, 0), max(rect[1] - margin, 0)
    bottom = min(rect[0] + rect[2] + margin, size[0])
    right = min(rect[1] + rect[3] + margin, size[1])
    return top, left, bottom - top, right - left


def affine_matrix(name: str, arg: float, size: Tuple[int, int]) -> Tuple[float, ...]:
    """PIL's AFFINE data (a, b, c, d, e, f) of a geometric op: the output point (x, y) samples the
    input at (a·x + b·y + c, d·x + e·y + f), in continuous coordinates (pixel i spans [i, i+1))."""
    height, width = size
    if name == "ShearX":
        return 1.0, arg, 0.0, 0.0, 1.0, 0.0
    if name == "ShearY":
        return 1.0, 0.0, 0.0, arg, 1.0, 0.0
    if name == "TranslateXRel":
        return 1.0, 0.0, arg * width, 0.0, 1.0, 0.0
    if name == "TranslateYRel":
        return 1.0, 0.0, 0.0, 0.0, 1.0, arg * height
    if name == "Rotate":  # counter-clockwise by `arg` degrees about the frame centre, as PIL's rotate
        angle = -math.radians(arg)
        cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
        cx, cy = width / 2, height / 2
        return cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy
    raise ValueError(f"{name!r} is not a geometric op; use one of {', '.join(GEOMETRIC)}")


def _preimage(matrix: Sequence[float], out: Rect, size: Tuple[int, int], reach: int) -> Rect:
    """Pixels a warp reads to produce `out`: the sampled points' bounding box grown by the
    interpolation taps (`reach` beyond bilinear's) plus one pixel for rounding, clipped to the frame."""
    a, b, c, d, e, f = matrix
    top, left, height, width = out
    xs, ys = (left + 0.5, left + width - 0.5), (top + 0.5, top + height - 0.5)
    us = [a * x + b * y + c - 0.5 for x in xs for y in ys]
    vs = [d * x + e * y + f - 0.5 for x in xs for y in ys]
    t, lft = math.floor(min(vs)) - reach - 1, math.floor(min(us)) - reach - 1
    bottom, right = math.floor(max(vs)) + reach + 3, math.floor(max(us)) + reach + 3
    t, lft = max(t, 0), max(lft, 0)
    bottom, right = min(bottom, size[0]), min(right, size[1])
    if bottom <= t or right <= lft:  # every sample lands outside the frame: all fill
        return 0, 0, 1, 1
    return t, lft, bottom - t, right - lft


def _warp(x: torch.Tensor, x_rect: Rect, out: Rect, matrix: Sequence[float], fill: int,
          mode: str, size: Tuple[int, int]) -> torch.Tensor:
    """Output region `out` of the warp, from `x` holding region `x_rect` of the input frames.

    As PIL: a point sampled outside the frame takes the fill colour, one inside interpolates
    with the taps clamped to the frame edge (x's edge is the frame's wherever a tap reaches it).
    """
    a, b, c, d, e, f = matrix
    top, left, height, width = out
    ys = torch.arange(height, dtype=torch.float64).add_(top + 0.5).unsqueeze_(1)
    xs = torch.arange(width, dtype=torch.float64).add_(left + 0.5).unsqueeze_(0)
    u, v = a * xs + b * ys + c, d * xs + e * ys + f  # sampled points, frame coordinates
    outside = (u < 0) | (u >= size[1]) | (v < 0) | (v >= size[0])
    x_top, x_left, x_height, x_width = x_rect
    # to grid_sample's [-1, 1] over x's pixels (align_corners=False: -1 is x's left edge)
    grid = torch.stack(((u - x_left) * (2.0 / x_width) - 1.0, (v - x_top) * (2.0 / x_height) - 1.0), dim=-1)
    grid = grid.to(torch.float32).unsqueeze_(0)
    t, ch = x.shape[:2]
    result = torch.empty((t, ch, height, width), dtype=torch.uint8)
    # 4x larger blocks: grid_sample computes a point's weights once for all the planes it samples
    # (70 vs 76 ms for a 16-frame rotation)
    for block in _frame_blocks(t, ch * (x_height * x_width + height * width), 4 * BLOCK_VALUES):
        src = x[block].to(torch.float32, memory_format=torch.contiguous_format)
        value = F.grid_sample(src.view(1, -1, x_height, x_width), grid, mode=mode, padding_mode="border",
                              align_corners=False)
        _to_uint8(value.view(-1, ch, height, width), result[block])
    return _fill_outside(result, outside, fill)


def _line_taps(frac: np.ndarray, cubic: bool) -> Tuple[int, List[np.ndarray]]:
    """(offset of the first tap from floor(sample), the taps' weights) of PIL's affine filters:
    linear, or its bicubic (cubic convolution with a = −1), for every fraction in `frac`."""
    if not cubic:
        return 0, [1.0 - frac, frac]
    d2, d3 = frac * frac, frac * frac * frac
    return -1, [-frac + 2 * d2 - d3, 1 - 2 * d2 + d3, frac + d2 - d3, d3 - d2]


def _fill_outside(result: torch.Tensor, outside: torch.Tensor, fill: int) -> torch.Tensor:
    """Set uint8 `result` (…, h, w) to `fill` where the (h, w) mask `outside` is true: a uint8
    multiply and add, 20x faster than masked_fill_ with a broadcast mask."""
    outside = outside.contiguous()  # a transposed mask would make both passes strided
    return result.mul_((~outside).to(torch.uint8)).add_(outside.to(torch.uint8).mul_(fill))


def _frame_blocks(t: int, values_per_frame: int, block_values: int = BLOCK_VALUES) -> List[slice]:
    """Frames in blocks of about `block_values` float32 values: the several passes of a float op
    over a block run in cache (twice as fast as whole-clip passes on 16x320x427 clips)."""
    step = max(1, block_values // values_per_frame)
    return [slice(i, i + step) for i in range(0, t, step)]


def _to_uint8(value: torch.Tensor, out: torch.Tensor) -> None:
    """PIL's 8-bit result of a resampling into uint8 `out`: clipped and truncated; the 1e-3 keeps
    float32 error from pulling an exact integer below it. Adding it before the clip and
    truncating in numpy's casting clip is the same as clip, add, floor, in two passes, not four."""
    np.clip(value.add_(1e-3).numpy(), 0, 255, out=out.numpy(), casting="unsafe")


def _shift_lines(x: torch.Tensor, x_rect: Rect, out: Rect, slope: float, shift: float, fill: int,
                 size: Tuple[int, int], along_columns: bool, cubic: bool) -> torch.Tensor:
    """Warp that moves every row (column if `along_columns`) along itself: output position p of
    line l samples the input at p + slope·(l + ½) + shift (shear, translation).

    Same samples, filter and edge rule as PIL, but a weighted sum of 2 (4 for bicubic) shifted
    copies of the lines: several times cheaper than a 2-D warp. One uint8 gather collects each
    output line's run of input pixels (taps clamped to the frame edge), then every tap is one
    multiply-add with per-line weights over all lines at once.
    """
    t, ch = x.shape[:2]
    frame_out = out
    if along_columns:  # work on rows of the transposed frames (torch gathers fastest along the last dim)
        x, out, x_rect, size = x.transpose(-2, -1), (out[1], out[0], out[3], out[2]), \
            (x_rect[1], x_rect[0], x_rect[3], x_rect[2]), (size[1], size[0])
    line0, pos0, n_lines, n_pos = out
    offsets = slope * (np.arange(line0, line0 + n_lines) + 0.5) + shift
    samples = pos0 + offsets  # line's sample of position 0, in frame pixels
    k = np.floor(samples)
    first_tap, weights = _line_taps(samples - k, cubic)
    n_taps = len(weights)
    # positions j whose sample pos0 + j + ½ + offset lies inside [0, frame length)
    j0 = np.maximum(0, np.ceil(-pos0 - 0.5 - offsets))
    j1 = np.minimum(n_pos, np.ceil(size[1] - pos0 - 0.5 - offsets))
    frames = torch.empty((t, ch) + frame_out[2:], dtype=torch.uint8)  # the frames' layout, whatever x's
    if (j1 <= j0).all():  # x is a stand-in pixel then (see _preimage)
        return frames.fill_(fill)
    p0, p1 = int(j0.min()), int(j1.max())  # positions some line samples inside the frame
    n, run = p1 - p0, p1 - p0 + n_taps - 1  # positions computed, input pixels each line reads
    start = (k - x_rect[1] + first_tap).astype(np.int64) + p0  # x's pixel under line's first tap at p0
    lines = x[..., line0 - x_rect[0]:line0 - x_rect[0] + n_lines, :]
    if slope == 0 and 0 <= start[0] and start[0] + run <= x_rect[3]:  # translation within x: a slice
        index = None
    else:
        index = torch.from_numpy((start[:, None] + np.arange(run)).clip(0, x_rect[3] - 1)).expand(t, ch, -1, -1)
    weights = [torch.from_numpy(w.astype(np.float32)).unsqueeze_(1) for w in weights]
    computed = frames[..., p0:p1, :] if along_columns else frames[..., p0:p1]
    for block in _frame_blocks(t, ch * n_lines * run):
        if index is None:
            taps = lines[block, ..., start[0]:start[0] + run].to(torch.float32)
        else:
            taps = torch.gather(lines[block], 3, index[block]).to(torch.float32)
        if cubic:  # the same float32 steps as one multiply and three fused multiply-adds per line
            value = taps[..., :n] * weights[0]
            for tap in range(1, n_taps):
                value.addcmul_(taps[..., tap:tap + n], weights[tap])
        else:
            value = torch.lerp(taps[..., :n], taps[..., 1:], weights[1])
        _to_uint8(value.transpose(-2, -1) if along_columns else value, computed[block])  # written contiguously
    positions = np.arange(n_pos)
    outside = torch.from_numpy((positions < j0[:, None]) | (positions >= j1[:, None]))
    return _fill_outside(frames, outside.T if along_columns else outside, fill)


# ---- ops on uint8 (T, C, h, w) ------------------------------------------------------------

def _look_up(region: torch.Tensor, luts: np.ndarray) -> torch.Tensor:
    """Map every plane of uint8 `region` (T, C, h, w) through its table of `luts` (broadcast to
    (T, C, 256)); np.take is the fast uint8 look-up (torch has none)."""
    planes = region.numpy()
    luts = np.broadcast_to(luts, planes.shape[:2] + (256,))
    result = np.empty(planes.shape, np.uint8)
    for t in range(planes.shape[0]):
        for c in range(planes.shape[1]):
            np.take(luts[t, c], planes[t, c], out=result[t, c])
    return torch.from_numpy(result)


def _blend_table(degenerate: np.ndarray, factor: float) -> np.ndarray:
    """PIL's Image.blend(degenerate, x, factor) for every x: degenerate + factor·(x − degenerate)
    in float32, truncated to [0, 255]; `degenerate` (..., 1) -> tables (..., 256)."""
    values = np.arange(256, dtype=np.float32)
    blended = degenerate.astype(np.float32) + np.float32(factor) * (values - degenerate.astype(np.float32))
    return np.clip(blended, 0, 255).astype(np.uint8)


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness: blend with black."""
    return _look_up(x, _blend_table(np.zeros(1), factor))


def solarize(x: torch.Tensor, threshold: int) -> torch.Tensor:
    """Invert values >= threshold (threshold 256: unchanged)."""
    if threshold >= 256:
        return x
    return x ^ (x >= threshold).view(torch.uint8).mul_(255)  # 255 − v == v ^ 255 for uint8; bool views as 0/1


def solarize_add(x: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    """Add `add` (<= 128) to values below `threshold` (128): never past 255, so no clamp."""
    return x + (x < threshold).view(torch.uint8).mul_(add)


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    if bits >= 8:
        return x
    return TF.posterize(x, max(bits, 0))  # PIL keeps no bit for any bits <= 0


def _full_rect(frames: torch.Tensor) -> Rect:
    return (0, 0) + tuple(frames.shape[-2:])


def contrast(frames: torch.Tensor, factor: float, out: Rect) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast on region `out`: blend with the frame's grey mean rounded to
    an integer (the mean from the channel means with PIL's grey weights)."""
    t, c, h, w = frames.shape
    # (T, C); frame by frame: the same float32 sums (each frame's in the same order) without
    # a float copy of the whole clip
    channel_means = torch.cat([frames[f].float().mean(dim=(-2, -1)) for f in _frame_blocks(t, c * h * w)])
    grey = channel_means @ torch.tensor([19595.0, 38470.0, 7471.0]).div_(65536.0)
    mean = grey.add_(0.5).floor_().numpy().reshape(-1, 1, 1)
    return _look_up(_crop(frames, _full_rect(frames), out), _blend_table(mean, factor))


def autocontrast(frames: torch.Tensor, out: Rect) -> torch.Tensor:
    """PIL's ImageOps.autocontrast on region `out`: each frame's channels stretched from their
    min and max to [0, 255]."""
    planes = frames.contiguous()  # min/max over planes is ~10x faster than over interleaved pixels
    low = planes.amin(dim=(-2, -1), keepdim=True).double().squeeze(-1).numpy()  # (T, C, 1)
    high = planes.amax(dim=(-2, -1), keepdim=True).double().squeeze(-1).numpy()
    scale = 255.0 / np.maximum(high - low, 1)
    tables = np.clip(np.floor(np.arange(256) * scale - low * scale), 0, 255)
    tables = np.where(high > low, tables, np.arange(256)).astype(np.uint8)  # a flat channel stays
    return _look_up(_crop(frames, _full_rect(frames), out), tables)


def _histograms(frames: torch.Tensor) -> np.ndarray:
    """Histograms (T, C, 256) of uint8 frames (T, C, H, W) by PIL's C counter, 3x faster than
    torch.bincount per plane; RGB frames laid out as decoded (T, H, W, 3) are counted in place."""
    t, c, h, w = frames.shape
    pixels = frames.permute(0, 2, 3, 1)
    if c == 3 and pixels.is_contiguous():
        return np.array([Image.frombuffer("RGB", (w, h), frame, "raw", "RGB", 0, 1).histogram()
                         for frame in pixels.numpy()]).reshape(t, c, 256)
    planes = frames.contiguous().view(t * c, h, w).numpy()
    return np.array([Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1).histogram()
                     for plane in planes]).reshape(t, c, 256)


def equalize(frames: torch.Tensor, out: Rect) -> torch.Tensor:
    """PIL's ImageOps.equalize per frame and channel: look-up tables from the whole frames'
    histograms, applied to region `out`."""
    t, c, h, w = frames.shape
    hist = torch.from_numpy(_histograms(frames)).view(t * c, 256)
    top_value = 255 - (hist.flip(1) > 0).to(torch.uint8).argmax(1, keepdim=True)
    step = (h * w - hist.gather(1, top_value)) // 255  # PIL: pixels below the top value // 255
    below = hist.cumsum(1) - hist  # pixels below each value
    lut = (below + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256)).to(torch.uint8).numpy()  # step 0: unchanged
    return _look_up(_crop(frames, _full_rect(frames), out), lut.reshape(t, c, 256))


def color(x: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's adjust_saturation (PIL's Color: blend with the grey frame, truncated): its
    float32 steps, in frame blocks, the clip and cast in one pass."""
    t, ch, h, w = x.shape
    if ch != 3:
        return TF.adjust_saturation(x, factor)
    result = torch.empty(x.shape, dtype=torch.uint8)
    for block in _frame_blocks(t, (ch + 1) * h * w):
        # converted once, as planes: torch would convert the uint8 operand of every op, and ops on
        # interleaved channels do not vectorise
        planes = x[block].to(torch.float32, memory_format=torch.contiguous_format)
        r, g, b = planes.unbind(1)
        grey = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze_(1)
        np.clip(planes.mul_(factor).add_(grey, alpha=1.0 - factor).numpy(), 0, 255, out=result[block].numpy(),
                casting="unsafe")
    return result


def sharpness(x: torch.Tensor, factor: float, x_rect: Rect, out: Rect) -> torch.Tensor:
    """torchvision's adjust_sharpness of `x` (holding region `x_rect`: `out` grown by 1 within
    the frame), region `out`: x's outer ring unchanged (the frame edge, as PIL, or cropped off),
    the inside blended with the smoothing filter [1 1 1; 1 5 1; 1 1 1] / 13 rounded.

    Bit-identical to torchvision, in frame blocks and on `out` only: its rounded blur is the
    integer nearest (3x3 sum + 4·centre) / 13, which float32 gets exactly in any summation order
    (the error is far below the 1/26 that separates any such value from a half), and the blend
    is the same fused multiply-add (add_ with alpha), clipped and truncated.
    """
    t, ch, h, w = x.shape
    region = _crop(x, x_rect, out)
    top, left = out[0] - x_rect[0], out[1] - x_rect[1]
    r0, r1 = max(top, 1), min(top + out[2], h - 1)  # out's rows and columns inside x's ring
    c0, c1 = max(left, 1), min(left + out[3], w - 1)
    result = torch.empty((t, ch, out[2], out[3]), dtype=torch.uint8)
    if h <= 2 or w <= 2 or r1 <= r0 or c1 <= c0:  # torchvision leaves images this small unchanged
        return result.copy_(region)
    for rows in (slice(0, r0 - top), slice(r1 - top, out[2])):  # x's ring: unchanged
        result[..., rows, :] = region[..., rows, :]
    for columns in (slice(0, c0 - left), slice(c1 - left, out[3])):
        result[..., columns] = region[..., columns]
    inside = result[..., r0 - top:r1 - top, c0 - left:c1 - left]
    for block in _frame_blocks(t, ch * (r1 - r0 + 2) * (c1 - c0 + 2)):
        src = x[block, :, r0 - 1:r1 + 1, c0 - 1:c1 + 1].to(torch.float32, memory_format=torch.contiguous_format)
        rows = (src[..., :-2, :] + src[..., 1:-1, :]).add_(src[..., 2:, :])
        centre = src[..., 1:-1, 1:-1]
        blurred = (rows[..., :-2] + rows[..., 1:-1]).add_(rows[..., 2:]).add_(centre, alpha=4)
        blurred.mul_(1 / 13).round_().sub_(centre)
        np.clip(centre.add_(blurred, alpha=1.0 - factor).numpy(), 0, 255, out=inside[block].numpy(),
                casting="unsafe")
    return result


POINTWISE: Dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "Invert": lambda x, _: TF.invert(x),
    "Posterize": posterize,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "Brightness": brightness,
}


class RandAugment:
    """timm's RandAugment for one config string on uint8 clips (T, C, H, W), one draw per clip.

    `draw(rng)` -> the applied ops [(base name, argument)]; `__call__(clip, ops, box)` ->
    the augmented clip's region `box` (the whole frame by default).
    """

    def __init__(self, config: str, translate_pct: float = 0.45, fill: int = 128,
                 interpolation: str = "bilinear"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"RandAugment interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
        self.policy = parse_policy(config)
        self.translate_pct, self.fill, self.interpolation = translate_pct, fill, interpolation

    def draw(self, rng: random.Random) -> List[Op]:
        p = self.policy
        ops = []
        for name in rng.choices(p.op_names, k=p.num_ops):
            if p.prob < 1.0 and rng.random() > p.prob:
                continue
            magnitude = p.magnitude
            if p.magnitude_std == math.inf:
                magnitude = rng.uniform(0, magnitude)
            elif p.magnitude_std > 0:
                magnitude = rng.gauss(magnitude, p.magnitude_std)
            magnitude = max(0.0, min(magnitude, p.magnitude_max))
            base, level_to_arg = LEVEL_TO_ARG[name]
            ops.append((base, None if level_to_arg is None else level_to_arg(magnitude, rng, self.translate_pct)))
        return ops

    def _needs(self, op: Op, out: Rect, size: Tuple[int, int]) -> Rect:
        name, arg = op
        if name in WHOLE_FRAME:
            return (0, 0) + size
        if name == "Sharpness":
            return _grow(out, 1, size)
        if name in GEOMETRIC:
            reach = 1 if self.interpolation == "bicubic" else 0
            return _preimage(affine_matrix(name, arg, size), out, size, reach)
        return out

    def _apply(self, op: Op, x: torch.Tensor, x_rect: Rect, out: Rect, size: Tuple[int, int]) -> torch.Tensor:
        name, arg = op
        if name in POINTWISE:
            return POINTWISE[name](x, arg)
        if name == "Contrast":
            return contrast(x, arg, out)
        if name == "AutoContrast":
            return autocontrast(x, out)
        if name == "Equalize":
            return equalize(x, out)
        if name == "Sharpness":
            return sharpness(x, arg, x_rect, out)
        a, b, c, d, e, f = matrix = affine_matrix(name, arg, size)
        cubic = self.interpolation == "bicubic"
        if name in ("ShearX", "TranslateXRel"):
            return _shift_lines(x, x_rect, out, b, c, self.fill, size, along_columns=False, cubic=cubic)
        if name in ("ShearY", "TranslateYRel"):
            return _shift_lines(x, x_rect, out, d, f, self.fill, size, along_columns=True, cubic=cubic)
        return _warp(x, x_rect, out, matrix, self.fill, self.interpolation, size)

    def __call__(self, clip: torch.Tensor, ops: Sequence[Op], box: Optional[Rect] = None) -> torch.Tensor:
        size = tuple(clip.shape[-2:])
        full = (0, 0) + size
        box = full if box is None else tuple(box)
        outs, need = [], box
        for op in reversed(ops):  # what each op must produce, from the last one back
            outs.append(need)
            need = self._needs(op, need, size)
        x, rect = _crop(clip, full, need), need
        for op, out in zip(ops, reversed(outs)):
            x, rect = self._apply(op, x, rect, out, size), out
        return x
