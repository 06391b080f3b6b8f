"""Video readers: decord and PyAV behind one small interface.

`open_video(path, backend)` returns a reader with `.num_frames`, `.fps` and
`.get_frames(indices) -> uint8 ndarray (T, H, W, 3)`. Frame `i` is the i-th frame in presentation
order. Both backends decode only the window the indices need (decord's `get_batch`; PyAV seeks to
the keyframe before the first wanted frame, decodes forward to the last one, seeks again where a
keyframe lies between two wanted frames, and lets the decoder skip the frames that are neither
wanted nor referenced). Every problem with the file raises `VideoReadError(path, reason)`; when
decord fails on a file and fallback is on, the PyAV reader takes over and the switch is logged
(once per file and process).
"""
from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import os
import re
from typing import List, Optional, Sequence

import av
import numpy as np
from tqdm import tqdm

from video_mcmae.errors import VideoReadError

logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
# same frames as decord on H.264 in 20-40% less decode CPU (docs/recipes.md#data)
DEFAULT_BACKEND = "pyav"
_fallback_logged: set = set()



@functools.cache
def collect_garbage_before_fork() -> None:
    """Collect the garbage before every fork of this process, from now on (registered once; a loader
    or a scan with worker processes calls it). Workers are forked: garbage the parent still holds
    (a PyAV stream in a reference cycle) would be freed in the child, and freeing a codec context
    whose decoder threads live only in the parent deadlocks."""
    os.register_at_fork(before=gc.collect)


def _in_worker() -> bool:
    # torch here only: config imports this module (DEFAULT_BACKEND) and is torch-free (tests/test_config.py)
    import torch.utils.data

    return torch.utils.data.get_worker_info() is not None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # decord prefixes "[hh:mm:ss] /source/file.cc:123: " and may add a failed check expression.
    line = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[-1])
    if "ERROR " in line:
        return line.split("ERROR ", 1)[1]
    if line.startswith("Check failed:") and ") " in line:
        return line.rsplit(") ", 1)[1]
    return line


def _as_indices(indices: Sequence[int], num_frames: int, path: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"no frame indices requested from {path!r}")
    if idx.min() < 0 or idx.max() >= num_frames:
        raise IndexError(
            f"frame indices {idx.min()}..{idx.max()} out of range for {path!r} with {num_frames} frames"
        )
    return idx


class DecordReader:
    """decord `VideoReader`; one decoding thread inside DataLoader workers by default."""

    backend = "decord"

    def __init__(self, path: str, num_threads: Optional[int] = None):
        # Imported when a file is read with decord (not the default backend): a decord loaded before
        # PyAV shadows PyAV's libvpx, which breaks VP9 encoding (video_mcmae/synthetic/encode.py)
        import decord

        _check_file(path)
        self.path = str(path)
        if num_threads is None:
            num_threads = 1 if _in_worker() else 0  # 0 = decord's automatic choice
        try:
            self._vr = decord.VideoReader(self.path, num_threads=num_threads, ctx=decord.cpu(0))
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as e:  # decord raises RuntimeError or its own DECORDError
            reason = _first_line(e).replace(self.path, "the file")  # the error already names it
            raise VideoReadError(self.path, f"decord: {reason}") from None
        if self.num_frames <= 0:
            raise VideoReadError(self.path, "no video frames")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = _as_indices(indices, self.num_frames, self.path)
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = self._vr.get_batch(unique.tolist()).asnumpy()
        except Exception as e:
            raise VideoReadError(self.path, f"decord: {_first_line(e)}") from None
        return np.ascontiguousarray(frames[inverse.reshape(-1)])

    def close(self) -> None:
        self._vr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PyAVReader:
    """PyAV reader indexing frames by the sorted presentation timestamps of the packets.

    Opening demuxes the file once without decoding (as decord does) to get an exact frame
    count and a frame -> timestamp table, which makes seeking exact for any frame rate.
    """

    backend = "pyav"

    def __init__(self, path: str, num_threads: Optional[int] = None):

        _check_file(path)
        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except Exception as e:
            raise VideoReadError(self.path, f"pyav: {_first_line(e)}") from None
        try:
            if not self._container.streams.video:
                raise VideoReadError(self.path, "no video stream")
            self._stream = self._container.streams.video[0]
            if num_threads is None:
                num_threads = 1 if _in_worker() else 0
            self._stream.codec_context.thread_count = num_threads
            pts, keys = [], []
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # flush packet at the end of the stream
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    raise VideoReadError(self.path, "packets without timestamps; re-encode the file")
                pts.append(ts)
                if packet.is_keyframe:
                    keys.append(ts)
        except VideoReadError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise VideoReadError(self.path, f"pyav: {_first_line(e)}") from None
        self._pts = np.unique(np.asarray(pts, dtype=np.int64))
        self._keyframes = np.searchsorted(self._pts, np.unique(np.asarray(keys, dtype=np.int64)))
        self.num_frames = int(self._pts.size)
        if self.num_frames == 0:
            self.close()
            raise VideoReadError(self.path, "no video frames")
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0

    def _runs(self, frames: np.ndarray) -> List[np.ndarray]:
        """Split sorted frame indices where seeking beats decoding on: a run starts at a wanted
        frame whose keyframe lies after the previous wanted frame (frames before the first
        keyframe count as keyframe 0)."""
        if self._keyframes.size == 0:
            return [frames]
        pos = np.searchsorted(self._keyframes, frames, side="right") - 1
        keys = np.where(pos >= 0, self._keyframes[np.maximum(pos, 0)], 0)
        return np.split(frames, np.flatnonzero(keys[1:] > frames[:-1]) + 1)

    def _decode(self, wanted_pts: np.ndarray, from_start: bool) -> dict:
        """Decode from the keyframe before `wanted_pts[0]` (the file start if `from_start`) to
        `wanted_pts[-1]`, returning {pts: rgb frame} of the wanted ones ({} if the seek overshot).
        Frames nobody wants and no frame refers to are skipped by the decoder (skip_frame NONREF):
        the wanted frames come out bit-identical, with a third fewer frames decoded on H.264."""
        target = int(self._pts[0] if from_start else wanted_pts[0])
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        context = self._stream.codec_context
        wanted = set(wanted_pts.tolist())
        last = int(wanted_pts[-1])
        got: dict = {}
        first_seen = None
        try:
            for packet in self._container.demux(self._stream):
                context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
                for frame in self._stream.decode(packet):
                    if frame.pts is None:
                        raise VideoReadError(self.path, "decoded frame without a timestamp; re-encode the file")
                    if first_seen is None:
                        first_seen = frame.pts
                        if first_seen > wanted_pts[0] and not from_start:
                            return {}  # the seek overshot: caller retries from the start
                    if frame.pts in wanted:
                        got[frame.pts] = frame.to_ndarray(format="rgb24")
                    if frame.pts >= last:
                        return got
        finally:
            context.skip_frame = "DEFAULT"
        return got

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = _as_indices(indices, self.num_frames, self.path)
        unique, inverse = np.unique(idx, return_inverse=True)
        got: dict = {}
        try:
            for run in self._runs(unique):
                run_pts = self._pts[run]
                decoded = self._decode(run_pts, from_start=False)
                got.update(decoded if decoded else self._decode(run_pts, from_start=True))
        except VideoReadError:
            raise
        except Exception as e:
            raise VideoReadError(self.path, f"pyav: {_first_line(e)}") from None
        wanted_pts = self._pts[unique]
        missing = [int(i) for i, p in zip(unique, wanted_pts) if int(p) not in got]
        if missing:
            raise VideoReadError(
                self.path, f"frames {missing[:5]} could not be decoded (truncated or corrupt file)"
            )
        frames = [got[int(p)] for p in wanted_pts]
        if len({f.shape for f in frames}) > 1:
            raise VideoReadError(self.path, "frame size changes inside the video; re-encode the file")
        return np.stack(frames)[inverse.reshape(-1)]

    def close(self) -> None:
        """Close the file and drop the stream: its codec context (and the decoder's threads) is
        freed now, in this process. A reader kept alive in a reference cycle would otherwise be
        freed by whichever process collects it, possibly a forked DataLoader worker, where
        freeing the parent's decoder threads deadlocks."""
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _FallbackReader:
    """decord first; PyAV takes over (logged) if decord fails to open or to decode the file."""

    def __init__(self, path: str, num_threads: Optional[int]):
        self.path = str(path)
        self._num_threads = num_threads
        try:
            self._reader = DecordReader(path, num_threads)
        except VideoReadError as e:
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                raise
            self._switch(e)

    @property
    def backend(self) -> str:
        return self._reader.backend

    @property
    def num_frames(self) -> int:
        return self._reader.num_frames

    @property
    def fps(self) -> float:
        return self._reader.fps

    def _switch(self, error: VideoReadError) -> None:
        if self.path not in _fallback_logged:
            _fallback_logged.add(self.path)
            logger.warning("decord failed on %s (%s); reading it with PyAV", self.path, error.reason)
        try:
            self._reader = PyAVReader(self.path, self._num_threads)
        except VideoReadError as e2:
            raise VideoReadError(self.path, f"{error.reason}; {e2.reason}") from None

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        try:
            return self._reader.get_frames(indices)
        except VideoReadError as e:
            if self._reader.backend != "decord":
                raise
            expected = self._reader.num_frames
            self._switch(e)
            if self._reader.num_frames != expected:
                raise VideoReadError(
                    self.path,
                    f"{e.reason}; PyAV finds {self._reader.num_frames} frames where decord found {expected}",
                ) from None
            return self._reader.get_frames(indices)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_video(path: str, backend: str = DEFAULT_BACKEND, fallback: bool = True, num_threads: Optional[int] = None):
    """Open `path` with `backend` ('decord' or 'pyav').

    With backend 'decord' and `fallback=True`, a file decord cannot open or decode is read with
    PyAV instead (logged once per file). `num_threads=None` means one decoding thread inside
    DataLoader workers and the library's automatic choice elsewhere.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video reader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = os.fspath(path)
    if backend == "pyav":
        return PyAVReader(path, num_threads)
    if fallback:
        return _FallbackReader(path, num_threads)
    return DecordReader(path, num_threads)


def check_video(path: str, backend: str = DEFAULT_BACKEND) -> Optional[str]:
    """None if the file opens and its first and last frames decode, else the reason."""
    try:
        with open_video(path, backend, num_threads=1) as r:
            r.get_frames([0, r.num_frames - 1])
    except VideoReadError as e:
        return e.reason
    return None


def _check_job(job):
    index, path, backend = job
    return index, check_video(path, backend)


def scan_videos(paths: Sequence[str], backend: str = DEFAULT_BACKEND, workers: int = 0,
                progress: bool = False) -> dict:
    """`check_video` over many files with `workers` processes -> {index: reason} of the bad ones."""
    jobs = [(i, p, backend) for i, p in enumerate(paths)]
    bad = {}
    if workers > 0:
        collect_garbage_before_fork()  # the pool's workers are forked
        pool = multiprocessing.Pool(workers)
        results = pool.imap_unordered(_check_job, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8))))
    else:
        pool, results = None, map(_check_job, jobs)
    try:
        if progress:
            results = tqdm(results, total=len(jobs), unit="video", desc="checking videos")
        for index, reason in results:
            if reason is not None:
                bad[index] = reason
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return bad
