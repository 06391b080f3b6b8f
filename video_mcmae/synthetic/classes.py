"""The class catalogue of the procedural set and how labels map under time reversal and a
left-right flip."""

from __future__ import annotations

from typing import Dict, Tuple

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
MOTIONS: Dict[str, Tuple[str, int]] = {
    "moving_left": ("travel_x", -1), "moving_right": ("travel_x", 1),
    "moving_up": ("travel_y", -1), "moving_down": ("travel_y", 1),
    "rotating_clockwise": ("spin", 1), "rotating_counterclockwise": ("spin", -1),
    "growing": ("log_size_sweep", 1), "shrinking": ("log_size_sweep", -1),
    "orbiting_clockwise": ("orbit_sweep", 1), "orbiting_counterclockwise": ("orbit_sweep", -1),
    "hue_cycling_forward": ("hue_sweep", 1), "hue_cycling_backward": ("hue_sweep", -1),
}


def check_class(name: str) -> int:
    """The label of ``name`` in the full catalogue; an unknown name is a ``ValueError``."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown synthetic class {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def time_reverse_class(name: str) -> str:
    """The class a video of ``name`` becomes when played backwards."""
    i = check_class(name)
    return CLASS_NAMES[i ^ 1]


def hflip_class(name: str) -> str:
    """The class a video of ``name`` becomes when mirrored left-right."""
    i = check_class(name)
    return CLASS_NAMES[i ^ 1] if name in _HFLIP_SWAPS else name


def class_names(num_classes: int) -> Tuple[str, ...]:
    """The first ``num_classes`` names of the catalogue (label i = position i)."""
    if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
            or not MIN_CLASSES <= num_classes <= MAX_CLASSES or num_classes % 2):
        raise ValueError(
            f"num_classes={num_classes!r}: the synthetic set needs an even number from "
            f"{MIN_CLASSES} to {MAX_CLASSES} (classes come in opposite pairs)")
    return CLASS_NAMES[:num_classes]
