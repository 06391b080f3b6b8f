"""Cluttered scenes for the self-supervised evaluation (``tools/eval_ssl.py``): several objects
over a textured background, all carried by a camera pan.

A masked autoencoder can only learn from what the masked cubes hold; the demo's videos (one
object on a mostly flat background) leave most cubes flat, so the pretext has little to learn.
A scene keeps the demo's label semantics -- every object shows the class's motion, so the label
still needs time -- and fills the frame with structure:

- the background is a sum of plane waves with whole numbers of periods across the frame, so it
  tiles the same torus the objects live on and pans without an edge;
- a camera pan moves the background and every object alike; its size is kept below the
  smallest class travel (60% of the frame) so a ``moving_left`` scene still moves left;
- one to ``max_objects`` objects, each a ``sample_params`` draw (shape, texture, colour, motion).

The two label symmetries hold as for single videos: ``time_reverse_scene`` renders the reversed
video exactly and ``hflip_scene`` the mirrored one up to rounding. Everything is a pure function
of ``(class name, generator, style)``; ``render_scene`` of the ``SceneParams``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .classes import MOTIONS, check_class, hflip_class, time_reverse_class
from .params import check_geometry, hflip_params, sample_params, time_reverse_params
from .render import SHAPES, TEXTURES, VideoParams, composite, hsv_to_rgb, object_layer, object_pose, time_axis

# A wave: (periods across x, periods across y, phase, weight).
Wave = Tuple[int, int, float, float]
# A ramp fill: (direction in the object's own frame, radians; per-channel slope).
Ramp = Tuple[float, Tuple[float, float, float]]
FILLS: Tuple[str, ...] = ("texture", "ramp")
SCENE_BACKGROUNDS: Tuple[str, ...] = ("waves", "ramp")
# What a distractor does (the catalogue's straight-line movers), drawn uniformly and independently
# of the scene's label.
DISTRACTOR_CLASSES: Tuple[str, ...] = tuple(n for n, (quantity, _) in MOTIONS.items() if quantity.startswith("travel_"))


@dataclass(frozen=True)
class SceneStyle:
    """How cluttered a scene is; every field is a knob of ``tools/eval_ssl.py``."""

    min_objects: int = 1
    max_objects: int = 3
    num_waves: int = 4  # plane waves summed into the background (0: a flat background)
    max_frequency: int = 4  # the most periods of a wave across the frame
    contrast: float = 1.0  # background wave amplitude, 1 = the full range between its two colours
    camera: float = 0.25  # the largest pan over the video, as a fraction of the frame size
    object_scale: float = 0.8  # object radius relative to ``sample_params``'s (13-25% of the frame)
    travel_scale: float = 1.0  # the class's travel relative to ``sample_params``'s (60-100% of the frame)
    shape: Optional[str] = None  # force one object shape; None keeps each object's drawn one
    texture: Optional[str] = None  # force one object texture; None keeps each object's drawn one
    fill: str = "texture"  # texture: the object's texture; ramp: a linear colour ramp across the object
    fill_amplitude: float = 0.3  # ramp fill: the colour change from the object's centre to its edge
    background: str = "waves"  # waves: plane waves on the torus; ramp: one linear ramp across the frame
    # Distractors: objects that move left, right, up or down whatever the label, drawn under the
    # labelled objects and smaller (``distractor_scale`` x their radius), so the class is the
    # motion of the largest objects and the others' motion is clutter.
    distractors: int = 0
    distractor_scale: float = 0.5

    def __post_init__(self):
        def bad(name, need):
            raise ValueError(f"scene {name}={getattr(self, name)!r}: need {need}")

        if not 1 <= self.min_objects <= self.max_objects:
            bad("min_objects", f"an integer from 1 to max_objects ({self.max_objects})")
        if self.num_waves < 0:
            bad("num_waves", "an integer >= 0")
        if self.max_frequency < 1:
            bad("max_frequency", "an integer >= 1")
        if not 0.0 <= self.contrast <= 1.0:
            bad("contrast", "a number from 0 to 1")
        if not self.travel_scale > 0:
            bad("travel_scale", "a number > 0")
        # Keep the pan below the smallest class travel so the class's direction survives it.
        if not 0.0 <= self.camera < 0.6 * self.travel_scale:
            bad("camera", f"a fraction from 0 to below {0.6 * self.travel_scale:g} (the smallest class travel, "
                          "0.6 x travel_scale)")
        if not self.object_scale > 0:
            bad("object_scale", "a number > 0")
        if self.shape is not None and self.shape not in SHAPES:
            bad("shape", f"one of {', '.join(SHAPES)} or None")
        if self.texture is not None and self.texture not in TEXTURES:
            bad("texture", f"one of {', '.join(TEXTURES)} or None")
        if self.fill not in FILLS:
            bad("fill", f"one of {', '.join(FILLS)}")
        if not 0.0 <= self.fill_amplitude <= 1.0:
            bad("fill_amplitude", "a number from 0 to 1")
        if self.background not in SCENE_BACKGROUNDS:
            bad("background", f"one of {', '.join(SCENE_BACKGROUNDS)}")
        if self.distractors < 0:
            bad("distractors", "an integer >= 0")
        if not 0 < self.distractor_scale <= 1:
            bad("distractor_scale", "a number above 0 and at most 1 (the labelled objects stay the largest)")


@dataclass(frozen=True)
class SceneParams:
    """Everything that defines one scene; ``render_scene`` is a pure function of it."""

    class_name: str
    objects: Tuple[VideoParams, ...]  # drawn in order, each already carried by the camera
    fills: Tuple[Optional[Ramp], ...]  # per object: None keeps its texture, else a ramp across it
    waves: Tuple[Wave, ...]
    ramp: Tuple[float, float]  # background ramp: level change across the frame's half-width, half-height
    contrast: float
    bg_colours: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    camera: Tuple[float, float]  # (dx, dy) of the pan over the whole video, in pixels

    @property
    def num_frames(self) -> int:
        return self.objects[0].num_frames

    @property
    def height(self) -> int:
        return self.objects[0].height

    @property
    def width(self) -> int:
        return self.objects[0].width


def _colour(rng: np.random.Generator, low: float, high: float) -> Tuple[float, float, float]:
    rgb = hsv_to_rgb(np.array([rng.random()]), np.array([rng.uniform(0.0, 0.5)]), np.array([rng.uniform(low, high)]))[0]
    return tuple(float(c) for c in rgb)


def sample_scene(class_name: str, rng: np.random.Generator, num_frames: int = 16, height: int = 64,
                 width: int = 64, style: SceneStyle = SceneStyle()) -> SceneParams:
    """Draw one scene of ``class_name``: the label only picks the direction of every object's
    motion; the camera, the background and the objects' looks share one distribution."""
    check_class(class_name)
    check_geometry(num_frames, height, width)
    count = int(rng.integers(style.min_objects, style.max_objects + 1))
    pan, direction = style.camera * rng.uniform(0.0, 1.0), rng.uniform(0.0, 2 * np.pi)
    camera = (float(pan * width * np.cos(direction)), float(pan * height * np.sin(direction)))

    def draw_object(name: str, scale: float):
        p = sample_params(name, rng, num_frames, height, width)
        obj = dataclasses.replace(
            p, radius=p.radius * style.object_scale * scale, shape=style.shape or p.shape, texture=style.texture or p.texture,
            travel=(p.travel[0] * style.travel_scale + camera[0], p.travel[1] * style.travel_scale + camera[1]))
        slopes = tuple(float(v) for v in rng.choice([-1.0, 1.0], 3) * rng.uniform(0.6, 1.0, 3) * style.fill_amplitude)
        return obj, ((float(rng.uniform(0.0, 2 * np.pi)), slopes) if style.fill == "ramp" else None)

    drawn = [draw_object(class_name, 1.0) for _ in range(count)]
    waves = []
    for _ in range(style.num_waves):
        kx = ky = 0
        while kx == 0 and ky == 0:
            kx, ky = (int(k) for k in rng.integers(-style.max_frequency, style.max_frequency + 1, size=2))
        waves.append((kx, ky, float(rng.uniform(0.0, 2 * np.pi)), float(rng.uniform(0.3, 1.0))))
    if style.background == "ramp":
        angle = rng.uniform(0.0, 2 * np.pi)
        ramp, waves = (float(np.cos(angle) / np.sqrt(2)), float(np.sin(angle) / np.sqrt(2))), []
        # Every channel gets a strong slope of its own sign: a channel that barely changes across a
        # cube is quantisation noise once the target normalises it per cube.
        mid = rng.uniform(0.4, 0.6, 3)
        delta = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.6, 1.0, 3) * 0.4
        colours = (tuple(float(c) for c in mid - delta), tuple(float(c) for c in mid + delta))
    else:
        ramp = (0.0, 0.0)
        # One dark and one lighter background colour, both duller than the saturated objects.
        colours = (_colour(rng, 0.05, 0.35), _colour(rng, 0.4, 0.75))
    # Drawn after everything else, so a style without distractors gives the scenes it always gave.
    drawn = [draw_object(DISTRACTOR_CLASSES[rng.integers(len(DISTRACTOR_CLASSES))], style.distractor_scale)
             for _ in range(style.distractors)] + drawn
    return SceneParams(class_name=class_name, objects=tuple(o for o, _ in drawn), fills=tuple(f for _, f in drawn),
                       waves=tuple(waves), ramp=ramp, contrast=style.contrast, camera=camera, bg_colours=colours)


def background_frames(scene: SceneParams, u: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` float32: the waves, panned by the camera, mapped between the two colours."""
    h, w = scene.height, scene.width
    xs = (np.arange(w) - (w - 1) / 2)[None, None, :] - (u * (scene.camera[0] / 2))[:, None, None]
    ys = (np.arange(h) - (h - 1) / 2)[None, :, None] - (u * (scene.camera[1] / 2))[:, None, None]
    field = np.zeros((len(u), h, w))
    for kx, ky, phase, weight in scene.waves:
        field = field + weight * np.cos(2 * np.pi * (kx * xs / w + ky * ys / h) + phase)
    total = sum(weight for *_, weight in scene.waves) or 1.0
    # The ramp is not periodic: the pan slides it, so a level beyond [0, 1] is clipped at the end.
    field = field / total + scene.ramp[0] * xs / (w / 2) + scene.ramp[1] * ys / (h / 2)
    level = np.clip(0.5 + 0.5 * scene.contrast * field, 0.0, 1.0).astype(np.float32)[..., None]
    c0, c1 = (np.asarray(c, dtype=np.float32) for c in scene.bg_colours)
    return c0 + (c1 - c0) * level


def _wrap(v: np.ndarray, period: float) -> np.ndarray:
    # Round-half-even is odd-symmetric, so the flip relation holds exactly (as in render.py).
    return v - period * np.round(v / period)


def ramp_fill(obj: VideoParams, ramp: Ramp, colour: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``colour`` ``(T, H, W, 3)``, compressed into [0.3, 0.7] so that a ramp of up to 0.3 is never
    clipped, plus a linear ramp along ``ramp``'s direction in the object's own frame (it turns,
    mirrors and scales with the object), from -slope to +slope across its radius."""
    cx, cy, radius, theta = object_pose(obj, u)
    xs = np.arange(obj.width) - (obj.width - 1) / 2
    ys = np.arange(obj.height) - (obj.height - 1) / 2
    dx = _wrap(xs[None, None, :] - _wrap(cx, obj.width)[:, None, None], obj.width)
    dy = _wrap(ys[None, :, None] - _wrap(cy, obj.height)[:, None, None], obj.height)
    cos_t, sin_t, r = (v[:, None, None] for v in (np.cos(theta), np.sin(theta), radius))
    p = obj.mirror * (cos_t * dx + sin_t * dy) / r
    q = (cos_t * dy - sin_t * dx) / r
    along = (np.cos(ramp[0]) * p + np.sin(ramp[0]) * q).astype(np.float32)[..., None]
    return np.float32(0.3) + np.float32(0.4) * colour + along * np.asarray(ramp[1], dtype=np.float32)


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.clip(frames * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)


def render_scene(scene: SceneParams) -> np.ndarray:
    """Render ``(T, H, W, 3)`` uint8 RGB frames: the background, then the objects in order."""
    u = time_axis(scene.num_frames)
    frames = background_frames(scene, u)
    for obj, fill in zip(scene.objects, scene.fills):
        alpha, colour = object_layer(obj, u)
        frames = composite(frames, alpha, colour if fill is None else ramp_fill(obj, fill, colour, u))
    return _to_uint8(frames)


def render_background(scene: SceneParams) -> np.ndarray:
    """``render_scene``'s frames without the objects (the pixels that differ are the objects')."""
    return _to_uint8(background_frames(scene, time_axis(scene.num_frames)))


def time_reverse_scene(scene: SceneParams) -> SceneParams:
    """The scene whose video is ``render_scene(scene)[::-1]`` (exactly)."""
    return dataclasses.replace(
        scene, class_name=time_reverse_class(scene.class_name),
        objects=tuple(time_reverse_params(p) for p in scene.objects),
        camera=(-scene.camera[0], -scene.camera[1]))


def hflip_scene(scene: SceneParams) -> SceneParams:
    """The scene whose video is ``render_scene(scene)[:, :, ::-1]`` (up to rounding)."""
    return dataclasses.replace(
        scene, class_name=hflip_class(scene.class_name), objects=tuple(hflip_params(p) for p in scene.objects),
        waves=tuple((-kx, ky, phase, weight) for kx, ky, phase, weight in scene.waves),
        ramp=(-scene.ramp[0], scene.ramp[1]), camera=(-scene.camera[0], scene.camera[1]))
