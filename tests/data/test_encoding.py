"""Training copies are encoded for fast decoding (x264 fastdecode), and both readers read them."""
import numpy as np
import pytest

from video_mcmae.data.encoding import x264_options
from video_mcmae.data.readers import open_video

from .conftest import decoded_level, frame_level


def x264_settings(path) -> str:
    """The settings line x264 writes into its stream ("cabac=1 ref=1 deblock=1:0:0 ...")."""
    data = open(path, "rb").read()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_options_default_to_fastdecode_and_refuse_unknown_tunes():
    assert x264_options() == {"crf": "23", "preset": "veryfast", "tune": "fastdecode"}
    assert x264_options(18, "slow", "none") == {"crf": "18", "preset": "slow"}
    with pytest.raises(ValueError, match="fastdecode"):
        x264_options(tune="fast")


@pytest.mark.parametrize("tune, cabac, deblock", [("fastdecode", "0", "0"), ("none", "1", "1")])
def test_reencode_tune(tmp_path, video_dir, load_tool, tune, cabac, deblock):
    tool = load_tool("reencode_videos")
    out = tmp_path / "out"
    assert tool.main(["--input-dir", str(video_dir), "--out-dir", str(out), "--workers", "0", "--tune", tune]) == 0
    settings = x264_settings(out / "a.mp4")
    assert f" cabac={cabac} " in settings and f" deblock={deblock}:" in settings
    if tune == "fastdecode":  # both readers decode the CAVLC, unfiltered stream to the same frames
        with open_video(out / "a.mp4", "pyav") as a, open_video(out / "a.mp4", "decord", fallback=False) as b:
            idx = list(range(0, a.num_frames, 3))
            frames = a.get_frames(idx)
            assert np.array_equal(frames, b.get_frames(idx))
        assert [round(decoded_level(f)) for f in frames] == pytest.approx([frame_level(i) for i in idx], abs=3)


def test_reencode_missing_input_dir_is_one_clear_error(tmp_path, load_tool, capsys):
    tool = load_tool("reencode_videos")
    assert tool.main(["--input-dir", str(tmp_path / "nope"), "--out-dir", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "input folder not found" in err and "nope" in err and "Traceback" not in err
