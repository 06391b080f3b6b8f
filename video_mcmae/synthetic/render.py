"""Rendering one video from its parameters: a background layer, then the object layered over
it, every frame at once.

The object's state in frame t is a function of ``u`` in [-1, 1] (``time_axis``), written as
``value(u) = mid + u * sweep / 2``; reversing time negates ``u`` exactly, which is what makes the
time-reversal relation of ``params.time_reverse_params`` exact. A new kind of layer (a moving
background, more objects, a camera shift) is one more function of ``(params, u)`` that returns an
``(alpha, colour)`` pair for ``composite``, or a per-frame background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "ell", "arrow")
TEXTURES: Tuple[str, ...] = ("solid", "stripes", "checker")
BACKGROUNDS: Tuple[str, ...] = ("solid", "gradient", "noise")


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


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of the same shape; hue in turns. Returns (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + (np.asarray(h)[..., None] % 1.0) * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def time_axis(num_frames: int) -> np.ndarray:
    """``u`` of each frame, from -1 (first) to 1 (last); reversing time negates it exactly
    (integer numerator)."""
    return (2.0 * np.arange(num_frames) - (num_frames - 1)) / max(num_frames - 1, 1)


def _wrap(v: np.ndarray, period: float) -> np.ndarray:
    # Round-half-even is odd-symmetric, so _wrap(-v) == -_wrap(v) exactly (needed by hflip).
    return v - period * np.round(v / period)


# ----------------------------------------------------------------------------- shapes


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


# ----------------------------------------------------------------------------- layers


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights spanning the same extent."""
    pos = np.linspace(0, n_in - 1, n_out)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n_in)[None, :]))


def background_layer(params: VideoParams) -> np.ndarray:
    """The static background, ``(H, W, 3)`` float64 RGB in [0, 1] (up to the noise grain)."""
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


def object_pose(params: VideoParams, u: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, centre y, radius and orientation of the object (float64, ``(T,)``)."""
    cx = params.center[0] + u * (params.travel[0] / 2)
    cy = params.center[1] + u * (params.travel[1] / 2)
    if params.orbit_radius:
        phi = params.orbit_phase + u * (params.orbit_sweep / 2)
        cx = cx + params.orbit_radius * np.sin(phi)
        cy = cy - params.orbit_radius * np.cos(phi)
    radius = params.radius * np.exp(u * (params.log_size_sweep / 2))
    theta = params.angle + u * (params.spin / 2)
    return cx, cy, radius, theta


def object_layer(params: VideoParams, u: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The object's coverage ``alpha (T, H, W, 1)`` and colour ``(T, H, W, 3)``, float32.

    The object lives on a torus: it wraps around the frame edges, so its position is uniform
    in every frame when its mid-video centre is.
    """
    h, w = params.height, params.width
    cx, cy, radius, theta = object_pose(params, u)
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
    t_count = len(u)
    hue = params.hue + u * (params.hue_sweep / 2)
    colour = hsv_to_rgb(hue, np.full(t_count, params.saturation), np.full(t_count, params.value)).astype(f32)
    obj = colour[:, None, None, :] * np.where(light, f32(1.0), f32(params.texture_dark))[..., None]
    return alpha, obj


def composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``colour`` over ``canvas`` with coverage ``alpha`` (all broadcastable, float32)."""
    return canvas + alpha * (colour - canvas)


def render_video(params: VideoParams) -> np.ndarray:
    """Render ``(T, H, W, 3)`` uint8 RGB frames, all frames at once."""
    u = time_axis(params.num_frames)
    alpha, obj = object_layer(params, u)
    frames = composite(background_layer(params).astype(np.float32)[None], alpha, obj)
    return np.clip(frames * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
