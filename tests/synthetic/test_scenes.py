"""The cluttered scenes of the self-supervised evaluation: deterministic, the label symmetries of
single videos, the class's motion survives the camera, and far fewer flat cubes than the demo's videos."""

import dataclasses

import numpy as np
import pytest

from video_mcmae import synthetic as syn
from video_mcmae.synthetic.render import time_axis
from video_mcmae.synthetic.scenes import (SceneStyle, background_frames, hflip_scene, render_scene, sample_scene,
                                          time_reverse_scene)


def scene(name, index=0, style=SceneStyle(), frames=8, size=64):
    return sample_scene(name, syn.video_rng(0, "train", syn.CLASS_NAMES.index(name), index), frames, size, size, style)


def test_render_is_deterministic_and_seed_dependent():
    a, b = render_scene(scene("moving_left", 3)), render_scene(scene("moving_left", 3))
    assert a.dtype == np.uint8 and a.shape == (8, 64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_scene(scene("moving_left", 4)))


# The default clutter, large ramp-filled squares over a ramp background, and two distractors.
STYLES = [SceneStyle(), SceneStyle(shape="square", fill="ramp", background="ramp", object_scale=1.5,
                                   travel_scale=0.4, camera=0.2),
          SceneStyle(max_objects=1, fill="ramp", distractors=2)]
STYLE_IDS = ["waves", "ramps", "distractors"]


@pytest.mark.parametrize("style", STYLES, ids=STYLE_IDS)
@pytest.mark.parametrize("name", syn.CLASS_NAMES)
def test_time_reversed_scene_renders_the_reversed_video(name, style):
    s = scene(name, 1, style)
    reverse = time_reverse_scene(s)
    assert reverse.class_name == syn.time_reverse_class(name)
    assert np.array_equal(render_scene(reverse), render_scene(s)[::-1])


@pytest.mark.parametrize("style", STYLES, ids=STYLE_IDS)
@pytest.mark.parametrize("name", syn.CLASS_NAMES)
def test_flipped_scene_renders_the_mirrored_video(name, style):
    s = scene(name, 2, style)
    flipped = hflip_scene(s)
    assert flipped.class_name == syn.hflip_class(name)
    diff = np.abs(render_scene(flipped).astype(int) - render_scene(s)[:, :, ::-1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def torus_x_shift(frames, background):
    """Total x displacement (pixels, on the torus) of what differs from the known background."""
    mask = np.abs(frames - background).max(-1) > 40
    width = mask.shape[2]
    angle = np.angle(mask.sum(1) @ np.exp(2j * np.pi * np.arange(width) / width)) / (2 * np.pi) * width
    steps = np.diff(angle)
    return (steps - width * np.round(steps / width)).sum()


@pytest.mark.parametrize("name,sign", [("moving_left", -1), ("moving_right", 1)])
def test_the_class_direction_survives_the_largest_camera_pan(name, sign):
    # One object over a flat background; the camera pans up to 0.55 of the frame, against or with it.
    style = SceneStyle(max_objects=1, num_waves=0, camera=0.55)
    for index in range(8):
        s = scene(name, index, style, frames=8, size=64)
        background = background_frames(s, time_axis(s.num_frames)) * 255
        assert sign * torus_x_shift(render_scene(s), background) > 0.3 * 64, (name, index)
        assert sign * s.objects[0].travel[0] > 0


def test_objects_follow_the_style():
    style = SceneStyle(min_objects=2, max_objects=2, object_scale=0.5, texture="checker", shape="ell", camera=0)
    for index in range(5):
        s = scene("moving_up", index, style)
        assert len(s.objects) == 2 and s.fills == (None, None)
        assert all(o.texture == "checker" and o.shape == "ell" for o in s.objects)
        assert all(o.radius <= 0.5 * 0.25 * 64 + 1e-9 for o in s.objects)
        assert all(-64 <= o.travel[1] <= -0.6 * 64 for o in s.objects)
    slow = scene("moving_up", 0, SceneStyle(travel_scale=0.25, camera=0))
    assert all(-16 <= o.travel[1] <= -0.6 * 16 for o in slow.objects)


def test_distractors_move_whatever_the_label_under_the_unchanged_labelled_scene():
    plain, cluttered = SceneStyle(max_objects=1, camera=0), SceneStyle(max_objects=1, camera=0, distractors=2)
    directions = set()
    for index in range(12):
        base, s = scene("moving_up", index, plain), scene("moving_up", index, cluttered)
        # the labelled object and everything else drawn as without distractors; the distractors under it
        assert s.objects[2:] == base.objects and s.waves == base.waves and s.camera == base.camera
        assert len(s.objects) == 3 and len(s.fills) == 3
        assert all(o.radius <= 0.5 * 0.8 * 0.25 * 64 + 1e-9 for o in s.objects[:2])
        for o in s.objects[:2]:
            assert (o.travel[0] == 0) != (o.travel[1] == 0)  # left, right, up or down
            directions.add((np.sign(o.travel[0]), np.sign(o.travel[1])))
    assert len(directions) == 4  # not only the label's direction
    assert scene("moving_up", 0, SceneStyle(distractors=0)) == scene("moving_up", 0)


def test_ramp_fill_varies_inside_the_object_and_ramp_background_is_linear():
    style = SceneStyle(max_objects=1, shape="square", fill="ramp", fill_amplitude=0.3, background="ramp",
                       contrast=0.5, camera=0, texture="solid")
    s = scene("moving_left", 0, style)
    solid = render_scene(dataclasses.replace(s, fills=(None,)))
    ramped = render_scene(s)
    inside = np.abs(ramped.astype(int) - solid.astype(int)).max(-1) > 0
    assert 0.05 < inside.mean() < 0.5  # only the object changes, and it does
    background = background_frames(s, time_axis(s.num_frames))[0, :, :, 0]
    rows = np.diff(background, axis=1)  # a linear ramp: constant steps along x
    assert np.allclose(rows, rows[0, 0], atol=1e-5) or np.ptp(background) < 1e-6


def flat_cube_fraction(video):
    """Fraction of 2x16x16 cubes with a channel whose std is below 2/255 (the issue's measure)."""
    t, h, w, _ = video.shape
    cubes = video.reshape(t // 2, 2, h // 16, 16, w // 16, 16, 3).transpose(0, 2, 4, 1, 3, 5, 6)
    std = (cubes.reshape(*cubes.shape[:3], -1, 3) / 255.0).std(axis=3)
    return float((std.min(-1) < 2 / 255).mean())


def test_scenes_have_structure_where_the_demo_videos_are_flat():
    names = syn.class_names(4)
    scenes = [render_scene(scene(n, i)) for n in names for i in range(4)]
    plain = [syn.render_video(syn.sample_params(n, syn.video_rng(0, "train", k, i), 8, 64, 64))
             for k, n in enumerate(names) for i in range(4)]
    assert np.mean([flat_cube_fraction(v) for v in scenes]) < 0.1
    assert np.mean([flat_cube_fraction(v) for v in plain]) > 0.2
    # the background spans a range of intensities, not one colour
    assert all(v.std() > 10 and v.min() < v.max() for v in scenes)


@pytest.mark.parametrize("field,value", [("camera", 0.6), ("contrast", 1.5), ("min_objects", 0),
                                         ("max_frequency", 0), ("texture", "dots"), ("object_scale", 0.0),
                                         ("shape", "star"), ("fill", "dots"), ("fill_amplitude", 2.0),
                                         ("background", "noise"), ("travel_scale", 0.0),
                                         ("distractors", -1), ("distractor_scale", 0.0), ("distractor_scale", 1.5)])
def test_bad_style_is_named(field, value):
    with pytest.raises(ValueError, match=f"scene {field}="):
        SceneStyle(**{field: value})


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic class"):
        sample_scene("jumping", np.random.default_rng(0))
