"""Frames -> encoded video files with PyAV (H.264 mp4 or VP9 webm), byte-reproducible.

This module imports nothing from the package, so a process can load it on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Union

# PyAV before anything can import decord: decord loads its own libvpx into the global symbol
# scope, and a PyAV loaded after it binds to that copy and cannot open the VP9 encoder.
import av
import numpy as np

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9"}


def check_frame_size(height: int, width: int) -> None:
    """Both sides even and >= 16, as yuv420p encoding needs; else a ``ValueError`` naming the side."""
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, (int, np.integer)) or size < 16 or size % 2:
            raise ValueError(f"{name}={size!r}: need an even integer >= 16 (yuv420p halves it)")


def encode_video(path: Union[str, Path], frames: np.ndarray, codec: str = "h264", fps: int = 16) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames to ``path`` with PyAV: ``codec`` 'h264' (mp4)
    or 'vp9' (webm), yuv420p, fast settings. The same frames give the same bytes.

    VP9 needs PyAV imported before decord in the process (importing this module first does it).
    """
    if codec not in CODECS:
        raise ValueError(f"codec={codec!r}: choose one of {', '.join(CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if not len(frames):
        raise ValueError("frames is empty: a video needs at least one frame")
    check_frame_size(frames.shape[1], frames.shape[2])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bitexact keeps the muxers from writing random ids/version strings, so output is reproducible.
    with av.open(str(path), "w", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(CODECS[codec], rate=int(fps))
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
