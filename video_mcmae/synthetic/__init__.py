"""Procedural labelled videos of moving/transforming shapes, written as real encoded files;
the data of the demo and the tests, not part of the training library.

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

Modules, in the order a video is made:

- ``classes``  the catalogue above and the label relations (``time_reverse_class``, ``hflip_class``)
- ``params``   ``sample_params``: one video's ``VideoParams`` drawn from its own generator
               (``video_rng``), and the symmetries on parameters (``time_reverse_params``,
               ``hflip_params``); why one frame does not give the label away
- ``render``   ``render_video``: parameters -> uint8 frames, a background layer and the object
               layered over it
- ``encode``   ``encode_video``: frames -> H.264 mp4 or VP9 webm with PyAV, byte-reproducible
- ``dataset``  ``make_dataset``: the whole set on disk in K400 and SSv2 layouts with data lists
               (the layout is described there)
"""

# encode first: it imports PyAV, which must be loaded before decord (see encode.py).
from .encode import encode_video
from .classes import CLASS_NAMES, MAX_CLASSES, MIN_CLASSES, class_names, hflip_class, time_reverse_class
from .render import BACKGROUNDS, SHAPES, TEXTURES, VideoParams, render_video
from .params import SPLITS, hflip_params, sample_params, time_reverse_params, video_rng
from .dataset import CLASS_FILE, LAYOUTS, SyntheticDataset, make_dataset, render_class, video_relpath

__all__ = [
    "BACKGROUNDS", "CLASS_FILE", "CLASS_NAMES", "LAYOUTS", "MAX_CLASSES", "MIN_CLASSES", "SHAPES", "SPLITS",
    "TEXTURES", "SyntheticDataset", "VideoParams", "class_names", "encode_video", "hflip_class", "hflip_params",
    "make_dataset", "render_class", "render_video", "sample_params", "time_reverse_class", "time_reverse_params",
    "video_relpath", "video_rng",
]
