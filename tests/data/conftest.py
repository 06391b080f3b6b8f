"""Tiny generated videos (PyAV) for the data tests, including deliberately broken files.

Frame i of a generated video is filled with the grey level `frame_level(i)`, so a decoded frame
tells which index it came from.
"""
import os
from types import SimpleNamespace

import av
import numpy as np
import pytest

CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


def frame_level(i: int) -> int:
    return (10 + 7 * i) % 250


def write_video(path, num_frames=32, height=48, width=64, fps=25, keyframe_every=8, faststart=False):
    codec = CODECS[os.path.splitext(path)[1]]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"g": str(keyframe_every)} if codec == "libx264" else {"g": str(keyframe_every), "deadline": "realtime"}
        for i in range(num_frames):
            img = np.full((height, width, 3), frame_level(i), np.uint8)
            img[: height // 4, : width // 4] = (255, 0, 0)  # red top-left marker: detects flips
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def decoded_level(frame: np.ndarray) -> float:
    h, w = frame.shape[:2]
    return float(frame[h // 2 :, w // 2 :].mean())


def make_bad_files(root):
    """One file per kind of breakage -> {kind: path}."""
    os.makedirs(root, exist_ok=True)
    bad = {"missing": os.path.join(root, "missing.mp4")}
    bad["empty"] = os.path.join(root, "empty.mp4")
    open(bad["empty"], "wb").close()
    bad["not_video"] = os.path.join(root, "notes.mp4")
    with open(bad["not_video"], "w") as f:
        f.write("this is a text file, not a video\n")
    full = write_video(os.path.join(root, "full.mp4"), num_frames=32)
    bad["truncated"] = os.path.join(root, "truncated.mp4")  # moov atom at the end: cut off
    with open(full, "rb") as f, open(bad["truncated"], "wb") as g:
        g.write(f.read(os.path.getsize(full) // 2))
    os.remove(full)
    bad["zero_frames"] = os.path.join(root, "zero_frames.mp4")
    c = av.open(bad["zero_frames"], "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    c.close()
    return bad


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a.mp4", num_frames=32)
    write_video(root / "b.webm", num_frames=24)
    write_video(root / "short.mp4", num_frames=5)
    write_video(root / "wide.mp4", num_frames=20, height=48, width=80)
    return root


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory):
    return make_bad_files(str(tmp_path_factory.mktemp("bad")))


@pytest.fixture(scope="session")
def vids():
    """Helpers for tests: write(path, ...), level(i), decoded_level(frame), make_bad_files(root)."""
    return SimpleNamespace(write=write_video, level=frame_level, decoded_level=decoded_level,
                           make_bad_files=make_bad_files)
