"""x264 settings for training copies of videos (tools/reencode_videos.py; tools/benchmark_loader.py
encodes its procedural set the same way).

A training clip decodes a 64-frame window for 16 frames, so decode speed, not file size, is what a
copy should buy. x264's `fastdecode` tune (CAVLC instead of CABAC, no deblocking, no weighted
prediction) cuts the CPU decode time of short-side-320 footage by ~40% for +11-13% file size and
0.1-0.4 dB PSNR at the same CRF (docs/recipes.md#data has the measurement); decord and PyAV read
such files as any H.264.
"""
from __future__ import annotations

from typing import Dict

# x264's own tunes; "none" leaves the tune unset (x264's default)
TUNES = ("fastdecode", "none", "film", "animation", "grain", "stillimage", "psnr", "ssim", "zerolatency")
DEFAULT_CRF, DEFAULT_PRESET, DEFAULT_TUNE = 23, "veryfast", "fastdecode"


def x264_options(crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET, tune: str = DEFAULT_TUNE) -> Dict[str, str]:
    """PyAV stream options for libx264; `tune` one of TUNES."""
    if tune not in TUNES:
        raise ValueError(f"x264 tune {tune!r}: use one of {', '.join(TUNES)}")
    options = {"crf": str(crf), "preset": preset}
    if tune != "none":
        options["tune"] = tune
    return options
