"""Procedural labelled videos of moving/transforming shapes, written as real encoded files.

Every class is one direction of a motion whose opposite is another class, so a label needs time
to be read:

=====  ==========================  ==========================  ==========================
label  class                       played backwards            mirrored left-right
=====  ==========================  ==========================  ==========================
0      moving_left                 moving_right                moving_right
1      moving_right                moving_left                 moving_left
2      moving_up                   moving_down                 moving_up
3      moving_down                 moving_up                   moving_down
4      rotating_clockwise          rotating_counterclockwise   rotating_counterclockwise
5      rotating_counterclockwise   rotating_clockwise          rotating_clockwise
6      growing                     shrinking                   growing
7      shrinking                   growing                     shrinking
8      orbiting_clockwise          orbiting_counterclockwise   orbiting_counterclockwise
9      orbiting_counterclockwise   orbiting_clockwise          orbiting_clockwise
10     hue_cycling_forward         hue_cycling_backward        hue_cycling_forward
11     hue_cycling_backward        hue_cycling_forward         hue_cycling_backward
=====  ==========================  ==========================  ==========================

A dataset uses the first ``num_classes`` (an even number, 4 to 12), so it always holds whole
opposite pairs, easiest first.

Why a single frame does not give the label away: every quantity that moves is periodic and
starts uniformly over its period: positions live on a torus (the object wraps around the frame
edges, so its position is uniform in every frame), orientation, orbit phase and hue start
uniform. Growing/shrinking is the exception: a bounded quantity that rises in one class and
falls in the other cannot have the same distribution in every frame, so the trajectories are
centred instead (the size at the middle frame has the same distribution in both classes;
only sizes near the ends of the range hint at the label).

Every trajectory is written as ``value(u) = mid + u * sweep / 2`` with ``u`` running from -1 to 1
over the video, so reversing time is exactly negating ``sweep`` (``time_reverse_params``) and a
horizontal flip is negating the x-coordinates and angles and mirroring the shape
(``hflip_params``); both are checked on rendered frames by the tests.

Layout written by ``make_dataset(out_dir, ...)``::

    out_dir/meta.json                                  options, class names, relations
    out_dir/k400/classes.txt                           class name of label i on line i
    out_dir/k400/{train,val,test}.csv                  "videos/<split>/<class>/<split>_<n>.mp4 <label>"
    out_dir/k400/videos/<split>/<class>/<split>_<n>.mp4    H.264
    out_dir/ssv2/classes.txt
    out_dir/ssv2/{train,val,test}.csv                  "videos/<id>.webm <label>"
    out_dir/ssv2/videos/<id>.webm                      VP9

List paths are relative to the layout directory (``out_dir/k400`` or ``out_dir/ssv2``): pass
that directory as the list's ``data_root``. Both layouts hold the same rendered videos, only the
container, codec and naming differ.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

# PyAV before anything can import decord: decord loads its own libvpx into the global symbol
# scope, and a PyAV loaded after it binds to that copy and cannot open the VP9 encoder.
import av
import numpy as np

# Opposite pairs are adjacent; a dataset takes a prefix, so keep the easiest pairs first.
CLASS_NAMES: Tuple[str, ...] = (
    "moving_left",
    "moving_right",
    "moving_up",
    "moving_down",
    "rotating_clockwise",
    "rotating_counterclockwise",
    "growing",
    "shrinking",
    "orbiting_clockwise",
    "orbiting_counterclockwise",
    "hue_cycling_forward",
    "hue_cycling_backward",
)
MIN_CLASSES, MAX_CLASSES = 4, len(CLASS_NAMES)

_HFLIP_SWAPS = {"moving_left", "moving_right", "rotating_clockwise", "rotating_counterclockwise",
                "orbiting_clockwise", "orbiting_counterclockwise"}

# What each class changes over the video and in which direction (screen: x right, y down,
# angles clockwise).
_MOTIONS: Dict[str, Tuple[str, int]] = {
    "moving_left": ("travel_x", -1), "moving_right": ("travel_x", 1),
    "moving_up": ("travel_y", -1), "moving_down": ("travel_y", 1),
    "rotating_clockwise": ("spin", 1), "rotating_counterclockwise": ("spin", -1),
    "growing": ("log_size_sweep", 1), "shrinking": ("log_size_sweep", -1),
    "orbiting_clockwise": ("orbit_sweep", 1), "orbiting_counterclockwise": ("orbit_sweep", -1),
    "hue_cycling_forward": ("hue_sweep", 1), "hue_cycling_backward": ("hue_sweep", -1),
}

SPLITS: Tuple[str, ...] = ("train", "val", "test")
# Layout name -> codec of its files (see encode_video).
LAYOUTS: Dict[str, str] = {"k400": "h264", "ssv2": "vp9"}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "ell", "arrow")
TEXTURES: Tuple[str, ...] = ("solid", "stripes", "checker")
BACKGROUNDS: Tuple[str, ...] = ("solid", "gradient", "noise")
CLASS_FILE = "classes.txt"


def _check_class(name: str) -> int:
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown synthetic class {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def time_reverse_class(name: str) -> str:
    """The class a video of ``name`` becomes when played backwards."""
    i = _check_class(name)
    return CLASS_NAMES[i ^ 1]


def hflip_class(name: str) -> str:
    """The class a video of ``name`` becomes when mirrored left-right."""
    i = _check_class(name)
    return CLASS_NAMES[i ^ 1] if name in _HFLIP_SWAPS else name


def class_names(num_classes: int) -> Tuple[str, ...]:
    """The first ``num_classes`` names of the catalogue (label i = position i)."""
    if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
            or not MIN_CLASSES <= num_classes <= MAX_CLASSES or num_classes % 2):
        raise ValueError(
            f"num_classes={num_classes!r}: the synthetic set needs an even number from "
            f"{MIN_CLASSES} to {MAX_CLASSES} (classes come in opposite pairs)")
    return CLASS_NAMES[:num_classes]


@dataclass(frozen=True)
class VideoParams:
    """Everything that defines one video; ``render_video`` is a pure function of it.

    Coordinates are pixels relative to the frame centre (x right, y down); angles are radians,
    clockwise on screen; each ``*_sweep`` is the signed total change over the whole video.
    """

    class_name: str
    num_frames: int
    height: int
    width: int
    shape: str
    mirror: int  # +1 or -1: the shape's local x axis is mirrored (an L becomes a J)
    radius: float  # half-extent of the object at the middle frame
    log_size_sweep: float
    center: Tuple[float, float]  # (x, y) at the middle frame
    travel: Tuple[float, float]  # (dx, dy) over the video
    angle: float
    spin: float
    orbit_radius: float
    orbit_phase: float  # 0 = above the pivot, pi/2 = to its right
    orbit_sweep: float
    hue: float  # in turns
    hue_sweep: float
    saturation: float
    value: float
    texture: str
    texture_period: float  # in units of the radius
    texture_dark: float  # brightness factor of the texture's second colour
    background: str
    bg_colours: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    bg_angle: float
    bg_seed: int
    bg_mirror: bool  # the rendered background is mirrored left-right


def _uniform_sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def _background_colour(rng: np.random.Generator) -> Tuple[float, float, float]:
    # Dull, mostly dark colours so the saturated, bright object always stands out.
    rgb = _hsv_to_rgb(np.array([rng.random()]), np.array([rng.uniform(0.0, 0.35)]),
                      np.array([rng.uniform(0.08, 0.5)]))[0]
    return tuple(float(c) for c in rgb)


def sample_params(class_name: str, rng: np.random.Generator, num_frames: int = 48,
                  height: int = 128, width: int = 128) -> VideoParams:
    """Draw one video of ``class_name``; the nuisance factors share one distribution across
    classes, only the direction of the class's motion depends on the label."""
    _check_class(class_name)
    _check_geometry(num_frames, height, width)
    side = min(height, width)
    shape = SHAPES[rng.integers(len(SHAPES))]
    # A plain disc shows no rotation, so circles always carry a texture.
    textures = TEXTURES[1:] if shape == "circle" else TEXTURES
    params = dict(
        class_name=class_name, num_frames=num_frames, height=height, width=width,
        shape=shape, mirror=_uniform_sign(rng),
        radius=float(side * np.exp(rng.uniform(np.log(0.13), np.log(0.25)))),
        log_size_sweep=0.0,
        center=(float(rng.uniform(-width / 2, width / 2)), float(rng.uniform(-height / 2, height / 2))),
        travel=(0.0, 0.0), angle=float(rng.uniform(0, 2 * np.pi)), spin=0.0,
        orbit_radius=0.0, orbit_phase=0.0, orbit_sweep=0.0,
        hue=float(rng.random()), hue_sweep=0.0,
        saturation=float(rng.uniform(0.7, 1.0)), value=float(rng.uniform(0.8, 1.0)),
        texture=textures[rng.integers(len(textures))],
        texture_period=float(rng.uniform(0.6, 1.0)), texture_dark=float(rng.uniform(0.4, 0.6)),
        background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        bg_colours=(_background_colour(rng), _background_colour(rng)),
        bg_angle=float(rng.uniform(0, 2 * np.pi)), bg_seed=int(rng.integers(2**31)), bg_mirror=False,
    )
    # Every magnitude is drawn for every class (same rng use); the class only picks which one
    # is non-zero and its sign. Travel spans 60-100% of the frame so any part of a clip shows it.
    magnitudes = dict(
        travel_x=rng.uniform(0.6, 1.0) * width, travel_y=rng.uniform(0.6, 1.0) * height,
        spin=rng.uniform(0.8, 1.4) * np.pi, log_size_sweep=rng.uniform(np.log(1.7), np.log(2.1)),
        orbit_sweep=rng.uniform(1.2, 1.8) * np.pi, hue_sweep=rng.uniform(0.6, 0.9))
    orbit_radius, orbit_phase = rng.uniform(0.15, 0.25) * side, rng.uniform(0, 2 * np.pi)
    quantity, sign = _MOTIONS[class_name]
    amount = float(sign * magnitudes[quantity])
    if quantity == "travel_x":
        params["travel"] = (amount, 0.0)
    elif quantity == "travel_y":
        params["travel"] = (0.0, amount)
    else:
        params[quantity] = amount
    if quantity == "orbit_sweep":
        params.update(orbit_radius=float(orbit_radius), orbit_phase=float(orbit_phase))
    return VideoParams(**params)


def time_reverse_params(params: VideoParams) -> VideoParams:
    """Parameters whose video is ``render_video(params)[::-1]`` (exactly)."""
    return dataclasses.replace(
        params, class_name=time_reverse_class(params.class_name),
        travel=(-params.travel[0], -params.travel[1]), spin=-params.spin,
        log_size_sweep=-params.log_size_sweep, orbit_sweep=-params.orbit_sweep,
        hue_sweep=-params.hue_sweep)


def hflip_params(params: VideoParams) -> VideoParams:
    """Parameters whose video is ``render_video(params)[:, :, ::-1]`` (up to rounding)."""
    return dataclasses.replace(
        params, class_name=hflip_class(params.class_name), mirror=-params.mirror,
        center=(-params.center[0], params.center[1]), travel=(-params.travel[0], params.travel[1]),
        angle=-params.angle, spin=-params.spin, orbit_phase=-params.orbit_phase,
        orbit_sweep=-params.orbit_sweep, bg_mirror=not params.bg_mirror)


def video_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """The generator of one video: depends only on its own coordinates, so changing how many
    videos a split or class has leaves the other videos unchanged."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} must be one of {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), label, index]))


def render_class(class_name: str, seed: int, num_frames: int = 48, height: int = 128,
                 width: int = 128, split: str = "train", index: int = 0) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of the video that ``make_dataset(seed=seed)`` writes for
    ``class_name``, ``split`` and ``index`` (before encoding)."""
    rng = video_rng(seed, split, _check_class(class_name), index)
    return render_video(sample_params(class_name, rng, num_frames, height, width))


# ----------------------------------------------------------------------------- rendering


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of the same shape; hue in turns. Returns (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + (np.asarray(h)[..., None] % 1.0) * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _wrap(v: np.ndarray, period: float) -> np.ndarray:
    # Round-half-even is odd-symmetric, so _wrap(-v) == -_wrap(v) exactly (needed by hflip).
    return v - period * np.round(v / period)


def _box_sdf(p: np.ndarray, q: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    return np.maximum(np.abs(p - cx) - hx, np.abs(q - cy) - hy)


def _triangle_sdf(p: np.ndarray, q: np.ndarray, apex: float, base: float, half_width: float) -> np.ndarray:
    """Isosceles triangle, apex at (0, apex) pointing to -q (up), base at q = base."""
    height = base - apex
    norm = np.hypot(height, half_width)
    side = (height * np.abs(p) + half_width * (apex - q)) / norm  # distance past a slanted side
    return np.maximum(side, q - base)


def _shape_sdf(shape: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) in units of the radius; the shapes fit
    the unit disc. ``q`` points down the screen at angle 0."""
    if shape == "circle":
        return np.hypot(p, q) - 0.95
    if shape == "square":
        return _box_sdf(p, q, 0.0, 0.0, 0.7, 0.7)
    if shape == "triangle":
        return _triangle_sdf(p, q, -0.95, 0.7, 0.7)
    if shape == "ell":
        return np.minimum(_box_sdf(p, q, -0.4, 0.0, 0.28, 0.85), _box_sdf(p, q, 0.05, 0.57, 0.73, 0.28))
    if shape == "arrow":
        return np.minimum(_triangle_sdf(p, q, -0.95, -0.1, 0.7), _box_sdf(p, q, 0.0, 0.4, 0.22, 0.55))
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _background(params: VideoParams) -> np.ndarray:
    h, w = params.height, params.width
    c0, c1 = (np.asarray(c, dtype=np.float64) for c in params.bg_colours)
    if params.background == "solid":
        img = np.broadcast_to(c0, (h, w, 3))
    elif params.background == "gradient":
        y, x = np.mgrid[0:h, 0:w]
        ramp = (x - (w - 1) / 2) * np.cos(params.bg_angle) + (y - (h - 1) / 2) * np.sin(params.bg_angle)
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
        img = c0 + (c1 - c0) * ramp[..., None]
    elif params.background == "noise":
        rng = np.random.default_rng(params.bg_seed)
        # Smooth blobs (a coarse random grid, bilinearly upsampled) plus faint fine grain.
        gh, gw = max(h // 16, 2), max(w // 16, 2)
        coarse = rng.random((gh, gw))
        ry = _interp_matrix(h, gh)
        rx = _interp_matrix(w, gw)
        blobs = ry @ coarse @ rx.T
        img = c0 + (c1 - c0) * blobs[..., None] + rng.normal(0.0, 0.015, (h, w, 3))
    else:
        raise ValueError(f"unknown background {params.background!r}; choose one of {', '.join(BACKGROUNDS)}")
    return img[:, ::-1] if params.bg_mirror else img


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights spanning the same extent."""
    pos = np.linspace(0, n_in - 1, n_out)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n_in)[None, :]))


def render_video(params: VideoParams) -> np.ndarray:
    """Render ``(T, H, W, 3)`` uint8 RGB frames, all frames at once."""
    t_count, h, w = params.num_frames, params.height, params.width
    # u in [-1, 1]; reversing time negates it exactly (integer numerator).
    u = (2.0 * np.arange(t_count) - (t_count - 1)) / max(t_count - 1, 1)
    cx = params.center[0] + u * (params.travel[0] / 2)
    cy = params.center[1] + u * (params.travel[1] / 2)
    if params.orbit_radius:
        phi = params.orbit_phase + u * (params.orbit_sweep / 2)
        cx = cx + params.orbit_radius * np.sin(phi)
        cy = cy - params.orbit_radius * np.cos(phi)
    radius = params.radius * np.exp(u * (params.log_size_sweep / 2))
    theta = params.angle + u * (params.spin / 2)

    # Per-pixel work in float32 (half the time of float64); the symmetries used by the
    # time-reversal and flip relations hold in any precision.
    f32 = np.float32
    xs = (np.arange(w) - (w - 1) / 2).astype(f32)
    ys = (np.arange(h) - (h - 1) / 2).astype(f32)
    # Offsets from the object centre on the torus, (T, 1, W) and (T, H, 1).
    dx = _wrap(xs[None, None, :] - _wrap(cx, w).astype(f32)[:, None, None], f32(w))
    dy = _wrap(ys[None, :, None] - _wrap(cy, h).astype(f32)[:, None, None], f32(h))
    cos_t, sin_t = (v.astype(f32)[:, None, None] for v in (np.cos(theta), np.sin(theta)))
    r = radius.astype(f32)[:, None, None]
    p = f32(params.mirror) * (cos_t * dx + sin_t * dy) / r
    q = (cos_t * dy - sin_t * dx) / r
    # One pixel of anti-aliasing at the edge.
    alpha = np.clip(f32(0.5) - _shape_sdf(params.shape, p, q) * r, 0.0, 1.0)[..., None]

    # Stripes: the half-periods where sin(2 pi p / period) >= 0.
    scale = f32(2 / params.texture_period)
    if params.texture == "stripes":
        light = np.floor(p * scale) % 2 == 0
    elif params.texture == "checker":
        light = (np.floor(p * scale) % 2) == (np.floor(q * scale) % 2)
    elif params.texture == "solid":
        light = np.ones_like(p, dtype=bool)
    else:
        raise ValueError(f"unknown texture {params.texture!r}; choose one of {', '.join(TEXTURES)}")
    hue = params.hue + u * (params.hue_sweep / 2)
    colour = _hsv_to_rgb(hue, np.full(t_count, params.saturation), np.full(t_count, params.value)).astype(f32)
    obj = colour[:, None, None, :] * np.where(light, f32(1.0), f32(params.texture_dark))[..., None]
    background = _background(params).astype(f32)[None]
    frames = background + alpha * (obj - background)
    return np.clip(frames * f32(255.0) + f32(0.5), 0.0, 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- files

_CODECS = {"h264": "libx264", "vp9": "libvpx-vp9"}


def _check_geometry(num_frames: int, height: int, width: int) -> None:
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise ValueError(f"num_frames={num_frames!r}: need an integer >= 2")
    _check_frame_size(height, width)


def _check_frame_size(height: int, width: int) -> None:
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, (int, np.integer)) or size < 16 or size % 2:
            raise ValueError(f"{name}={size!r}: need an even integer >= 16 (yuv420p halves it)")


def encode_video(path: Union[str, Path], frames: np.ndarray, codec: str = "h264", fps: int = 16) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames to ``path`` with PyAV: ``codec`` 'h264' (mp4)
    or 'vp9' (webm), yuv420p, fast settings. The same frames give the same bytes.

    VP9 needs PyAV imported before decord in the process (importing this module first does it).
    """
    if codec not in _CODECS:
        raise ValueError(f"codec={codec!r}: choose one of {', '.join(_CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if not len(frames):
        raise ValueError("frames is empty: a video needs at least one frame")
    _check_frame_size(frames.shape[1], frames.shape[2])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bitexact keeps the muxers from writing random ids/version strings, so output is reproducible.
    with av.open(str(path), "w", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(_CODECS[codec], rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1  # parallelism comes from the worker processes
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "24", "b": "0"}
        try:
            stream.codec_context.open()
        except av.FFmpegError as err:
            hint = (" decord was imported before PyAV in this process and its libvpx shadows PyAV's;"
                    " import av (or video_mcmae.synthetic) before decord") if "decord" in sys.modules else ""
            raise RuntimeError(f"cannot open the {codec} encoder for {path}: {err}.{hint}") from None
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@dataclass(frozen=True)
class SyntheticDataset:
    """What ``make_dataset`` wrote. List paths are relative to ``data_root(layout)``."""

    root: Path
    class_names: Tuple[str, ...]
    layouts: Tuple[str, ...]
    videos_per_class: Dict[str, int]
    num_frames: int
    fps: int
    height: int
    width: int
    num_videos: int  # rendered videos; each is written once per layout
    seconds: float

    def data_root(self, layout: str) -> Path:
        return self.root / layout

    def list_path(self, layout: str, split: str) -> Path:
        return self.root / layout / f"{split}.csv"

    def class_file(self, layout: str) -> Path:
        return self.root / layout / CLASS_FILE


def video_relpath(layout: str, split: str, label: int, index: int, names: Sequence[str]) -> str:
    """Path of one video relative to its layout directory."""
    if layout == "k400":
        return f"videos/{split}/{names[label]}/{split}_{index:05d}.mp4"
    # SSv2 names videos by a number; this one encodes (split, label, index) so it is stable.
    return f"videos/{SPLITS.index(split) + 1}{label:02d}{index:05d}.webm"


def _write_one(job: tuple) -> None:
    seed, split, label, index, name, num_frames, height, width, fps, outputs = job
    frames = render_video(sample_params(name, video_rng(seed, split, label, index), num_frames, height, width))
    for codec, path in outputs:
        encode_video(path, frames, codec, fps)


def _resolve_counts(videos_per_class: Union[int, Mapping[str, int]]) -> Dict[str, int]:
    if isinstance(videos_per_class, Mapping):
        unknown = set(videos_per_class) - set(SPLITS)
        if unknown or set(videos_per_class) != set(SPLITS):
            raise ValueError(f"videos_per_class={dict(videos_per_class)!r}: give a count for each of "
                             f"{', '.join(SPLITS)} (or one int for all)")
        counts = {s: videos_per_class[s] for s in SPLITS}
    else:
        counts = {s: videos_per_class for s in SPLITS}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= 99999:
            raise ValueError(f"videos per class for {split!r} is {n!r}: need an integer from 1 to 99999")
    return {s: int(n) for s, n in counts.items()}


def _resolve_layouts(layouts: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    chosen = tuple(LAYOUTS) if layouts == "both" else (layouts,) if isinstance(layouts, str) else tuple(layouts)
    bad = [x for x in chosen if x not in LAYOUTS]
    if bad or not chosen:
        raise ValueError(f"layouts={layouts!r}: choose 'k400', 'ssv2' or 'both'")
    return tuple(dict.fromkeys(chosen))


def make_dataset(out_dir: Union[str, Path], *, num_classes: int = 10,
                 videos_per_class: Optional[Union[int, Mapping[str, int]]] = None, num_frames: int = 48,
                 fps: int = 16, height: int = 128, width: int = 128, seed: int = 0,
                 layouts: Union[str, Iterable[str]] = "both", workers: Optional[int] = None,
                 overwrite: bool = False) -> SyntheticDataset:
    """Render and encode the synthetic set under ``out_dir`` (layout in the module docstring).

    ``videos_per_class`` is one int for every split or ``{"train": n, "val": n, "test": n}``
    (default 16/4/6). Video (split, label, index) depends only on ``seed`` and those three, so
    changing counts adds or drops videos without changing the others. ``workers`` processes
    render and encode (default: up to 2). A call owns ``out_dir``: existing layout folders or
    ``meta.json`` there are an error unless ``overwrite``, which deletes them all first.
    """
    started = time.perf_counter()
    names = class_names(num_classes)
    counts = _resolve_counts({"train": 16, "val": 4, "test": 6} if videos_per_class is None else videos_per_class)
    chosen = _resolve_layouts(layouts)
    _check_geometry(num_frames, height, width)
    if not isinstance(fps, (int, np.integer)) or not 1 <= fps <= 240:
        raise ValueError(f"fps={fps!r}: need an integer from 1 to 240")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: need a non-negative integer")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: need an integer >= 1")

    root = Path(out_dir)
    # One call owns the whole root, so meta.json always describes every layout folder in it.
    existing = [root / x for x in (*LAYOUTS, "meta.json") if (root / x).exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists; choose another out_dir or pass overwrite=True "
                         "(--overwrite) to replace it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    jobs, lines = [], {(x, s): [] for x in chosen for s in SPLITS}
    for split in SPLITS:
        # Index-major order, so any prefix of a list is class-balanced.
        for index in range(counts[split]):
            for label, name in enumerate(names):
                outputs = []
                for layout in chosen:
                    rel = video_relpath(layout, split, label, index, names)
                    lines[layout, split].append(f"{rel} {label}\n")
                    outputs.append((LAYOUTS[layout], str(root / layout / rel)))
                jobs.append((int(seed), split, label, index, name, num_frames, height, width, int(fps), outputs))

    if workers > 1 and len(jobs) > 2 * workers:
        with multiprocessing.get_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _write_one(job)

    for layout in chosen:
        (root / layout / CLASS_FILE).write_text("".join(f"{n}\n" for n in names))
        for split in SPLITS:
            (root / layout / f"{split}.csv").write_text("".join(lines[layout, split]))
    meta = dict(
        class_names=list(names), time_reverse={n: time_reverse_class(n) for n in names},
        hflip={n: hflip_class(n) for n in names}, videos_per_class=counts, num_frames=num_frames,
        fps=int(fps), height=height, width=width, seed=int(seed), layouts=list(chosen),
        list_paths="relative to the layout directory (out_dir/<layout>)")
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SyntheticDataset(root=root, class_names=names, layouts=chosen, videos_per_class=counts,
                            num_frames=int(num_frames), fps=int(fps), height=int(height), width=int(width),
                            num_videos=len(jobs), seconds=time.perf_counter() - started)
