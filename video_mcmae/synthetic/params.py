"""Drawing the parameters of one video, and the two label symmetries on parameters.

Why a single frame does not give the label away: every quantity that moves is periodic and
starts uniformly over its period: positions live on a torus (the object wraps around the frame
edges, so its position is uniform in every frame), orientation, orbit phase and hue start
uniform. Growing/shrinking is the exception: a bounded quantity that rises in one class and
falls in the other cannot have the same distribution in every frame, so the trajectories are
centred instead (the size at the middle frame has the same distribution in both classes;
only sizes near the ends of the range hint at the label).

Reversing time is exactly negating every ``*_sweep`` (``time_reverse_params``) and a horizontal
flip is negating the x-coordinates and angles and mirroring the shape (``hflip_params``); both
are checked on rendered frames by the tests.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from .classes import MOTIONS, check_class, hflip_class, time_reverse_class
from .encode import check_frame_size
from .render import BACKGROUNDS, SHAPES, TEXTURES, VideoParams, hsv_to_rgb

SPLITS: Tuple[str, ...] = ("train", "val", "test")


def check_geometry(num_frames: int, height: int, width: int) -> None:
    """At least two frames and an encodable frame size; else a ``ValueError`` naming the value."""
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise ValueError(f"num_frames={num_frames!r}: need an integer >= 2")
    check_frame_size(height, width)


def _uniform_sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def _background_colour(rng: np.random.Generator) -> Tuple[float, float, float]:
    # Dull, mostly dark colours so the saturated, bright object always stands out.
    rgb = hsv_to_rgb(np.array([rng.random()]), np.array([rng.uniform(0.0, 0.35)]),
                     np.array([rng.uniform(0.08, 0.5)]))[0]
    return tuple(float(c) for c in rgb)


def sample_params(class_name: str, rng: np.random.Generator, num_frames: int = 48,
                  height: int = 128, width: int = 128) -> VideoParams:
    """Draw one video of ``class_name``; the nuisance factors share one distribution across
    classes, only the direction of the class's motion depends on the label."""
    check_class(class_name)
    check_geometry(num_frames, height, width)
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
    quantity, sign = MOTIONS[class_name]
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
