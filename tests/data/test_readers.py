import gc
import logging
import multiprocessing
import pickle

import numpy as np
import pytest

from video_mcmae.data.loader import Loader
from video_mcmae.data.readers import VideoReadError, open_video

BACKENDS = ["decord", "pyav"]


@pytest.mark.parametrize("name", ["a.mp4", "b.webm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_requested_frames(video_dir, vids, name, backend):
    with open_video(video_dir / name, backend) as r:
        assert r.num_frames == (32 if name == "a.mp4" else 24)
        assert r.fps == pytest.approx(25.0)
        idx = [9, 2, 2, 0, r.num_frames - 1]  # unsorted and repeated
        frames = r.get_frames(idx)
    assert frames.dtype == np.uint8 and frames.shape == (5, 48, 64, 3)
    levels = [vids.decoded_level(f) for f in frames]
    assert levels == pytest.approx([vids.level(i) for i in idx], abs=3)


@pytest.mark.parametrize("name", ["a.mp4", "b.webm", "short.mp4"])
def test_decord_and_pyav_agree(video_dir, name):
    d = open_video(video_dir / name, "decord", fallback=False)
    a = open_video(video_dir / name, "pyav")
    assert d.num_frames == a.num_frames
    idx = list(range(0, d.num_frames, 3)) + [1]
    # identical frames: switching data.reader (PyAV by default) must not change what a run sees
    assert np.array_equal(d.get_frames(idx), a.get_frames(idx))


def _record_decoded_pts(reader, monkeypatch) -> list:
    """The pts of every frame the PyAV reader's stream decodes from now on, in order."""
    decoded = []
    orig = type(reader._stream).decode

    def counting_decode(self, *args, **kwargs):
        frames = orig(self, *args, **kwargs)
        decoded.extend(frame.pts for frame in frames)
        return frames

    monkeypatch.setattr(type(reader._stream), "decode", counting_decode)
    return decoded


def test_pyav_seeks_instead_of_decoding_everything(tmp_path, vids, monkeypatch):
    path = vids.write(tmp_path / "long.mp4", num_frames=64, keyframe_every=8)
    r = open_video(path, "pyav")
    decoded = _record_decoded_pts(r, monkeypatch)
    frames = r.get_frames([50, 52])
    assert [vids.decoded_level(f) for f in frames] == pytest.approx([vids.level(50), vids.level(52)], abs=3)
    assert 3 <= len(decoded) <= 8 + 3  # from the keyframe at 48 up to 52, not 53 frames


@pytest.mark.parametrize("kind", ["missing", "empty", "not_video", "truncated", "zero_frames"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_typed_error(bad_files, kind, backend):
    path = bad_files[kind]
    with pytest.raises(VideoReadError) as info:
        r = open_video(path, backend)
        r.get_frames([0])
    assert info.value.path == path and info.value.reason
    assert path in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))  # crosses worker processes intact
    assert (again.path, again.reason) == (info.value.path, info.value.reason)


def test_truncated_stream_with_intact_index(tmp_path, vids):
    # Index at the front (faststart), frame data cut: the index promises frames that are gone.
    full = vids.write(tmp_path / "full.mp4", num_frames=64, height=96, width=128, faststart=True)
    cut = tmp_path / "cut.mp4"
    data = open(full, "rb").read()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        r = open_video(cut, "pyav")
        r.get_frames([0, r.num_frames - 1])


def test_decord_failure_falls_back_to_pyav(video_dir, vids, monkeypatch, caplog):
    import decord

    def broken(*args, **kwargs):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(decord, "VideoReader", broken)
    with caplog.at_level(logging.WARNING):
        r = open_video(video_dir / "a.mp4", "decord")
    assert r.backend == "pyav"
    assert "simulated decord failure" in caplog.text and "a.mp4" in caplog.text
    assert vids.decoded_level(r.get_frames([3])[0]) == pytest.approx(vids.level(3), abs=3)
    with pytest.raises(VideoReadError):
        open_video(video_dir / "a.mp4", "decord", fallback=False)


def test_unknown_backend_and_out_of_range(video_dir):
    with pytest.raises(ValueError, match="decord, pyav"):
        open_video(video_dir / "a.mp4", "opencv")
    with pytest.raises(IndexError):
        open_video(video_dir / "a.mp4", "pyav").get_frames([32])


def full_decode(path):
    """Every frame in presentation order, decoded front to back without seeking or skipping."""
    import av

    with av.open(str(path)) as c:
        frames = {f.pts: f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])}
    return np.stack([frames[p] for p in sorted(frames)])


@pytest.mark.parametrize("name", ["keys.mp4", "keys.webm"])
@pytest.mark.parametrize("threads", [1, 0])
def test_pyav_frames_are_those_of_a_full_decode(tmp_path, vids, name, threads):
    import random

    from video_mcmae.data.sampling import sample_indices

    path = vids.write(tmp_path / name, num_frames=64, keyframe_every=8)
    reference = full_decode(path)
    r = open_video(path, "pyav", num_threads=threads)
    assert r.num_frames == len(reference)
    rng = random.Random(0)
    for i in range(12):
        idx = sample_indices("dense" if i % 2 else "segment", "train", r.num_frames, 8, 1 + i % 5, rng)[0]
        if i % 3 == 0:  # unsorted and repeated
            idx = np.concatenate([idx[::-1], idx[:2]])
        assert np.array_equal(r.get_frames(idx), reference[idx]), idx  # bit-exact


def test_pyav_decodes_only_from_the_keyframe_of_each_run(tmp_path, vids, monkeypatch):
    path = vids.write(tmp_path / "keys.mp4", num_frames=64, keyframe_every=8)
    r = open_video(path, "pyav")
    decoded = _record_decoded_pts(r, monkeypatch)
    keys = r._keyframes.tolist()
    assert len(keys) > 2
    key = max(k for k in keys if k <= 50)
    r.get_frames([2, 50])  # a keyframe lies between: seek instead of decoding frames 3..key-1
    assert len(decoded) <= 3 + (50 - key + 1)

    long_gop = vids.write(tmp_path / "long_gop.mp4", num_frames=64, keyframe_every=250)
    r = open_video(long_gop, "pyav")
    first_key_after_0 = r._keyframes[1] if len(r._keyframes) > 1 else 64
    wanted = list(range(0, min(33, first_key_after_0), 4))  # one run from keyframe 0
    decoded.clear()
    frames = r.get_frames(wanted)
    assert [vids.decoded_level(f) for f in frames] == pytest.approx([vids.level(i) for i in wanted], abs=3)
    assert len(decoded) < wanted[-1] + 1  # the B-frames nobody wants or refers to are skipped


def _collect_and_exit():
    gc.collect()


@pytest.mark.parametrize("closed", [True, False])
def test_a_reader_in_a_cycle_is_not_freed_in_a_forked_worker(video_dir, closed):
    """DataLoader workers are forked: garbage the parent left in a reference cycle would be freed
    in the child, and freeing a PyAV codec context whose decoder threads live in the parent
    deadlocks there (it hung the test suite once PyAV was the default reader). Once a loader is
    created, the parent collects its garbage before every fork; close() frees the codec context
    at once."""
    Loader([0])  # what registers the collection (not importing the readers)
    reader = open_video(video_dir / "a.mp4", "pyav", num_threads=2)  # two decoder threads
    reader.get_frames([0, 5])
    if closed:
        reader.close()
    cycle = [reader]
    cycle.append(cycle)
    del reader, cycle
    gc.disable()  # the cycle survives until the child collects it
    try:
        child = multiprocessing.get_context("fork").Process(target=_collect_and_exit)
        child.start()
        child.join(30)
        hung = child.is_alive()
        if hung:
            child.kill()
            child.join()
    finally:
        gc.enable()
        gc.collect()
    assert not hung and child.exitcode == 0
