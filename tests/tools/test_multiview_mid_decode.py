"""tools/test_multiview.py when a test video passes the start-up scan but fails mid-decode: the
video is excluded and listed as unreadable, and the report covers the other videos."""
import contextlib
import csv
import dataclasses
import io
import json

import pytest
import torch
from safetensors.torch import save_file

from video_mcmae.cli import multiview as multiview_cli
from video_mcmae.config import ModelConfig
from video_mcmae.data import datasets
from video_mcmae.data.readers import VideoReadError
from video_mcmae.models import build_model
from video_mcmae.weights import EXPORT_FORMAT

MODEL = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=4)


class FailsFromFrame:
    """`open_video` whose readers of one file fail from frame `frame` on (the scan reads the first
    and last frames through its own reader, so the file passes it)."""

    def __init__(self, path, frame):
        self.path, self.frame, self.open = path, frame, datasets.open_video

    def __call__(self, path, backend, fallback=True):
        reader = self.open(path, backend, fallback=fallback)
        if path == self.path:
            real, frame = reader.get_frames, self.frame

            def get_frames(indices):
                if max(indices) >= frame:
                    raise VideoReadError(path, f"invalid data at frame {frame}")
                return real(indices)

            reader.get_frames = get_frames
        return reader


@pytest.fixture
def setup(synthetic_root, tmp_path):
    torch.manual_seed(0)
    model = build_model(MODEL)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    (tmp_path / "tiny.json").write_text(json.dumps({"format": EXPORT_FORMAT, "preset": MODEL.name,
                                                    "model": dataclasses.asdict(MODEL), "linprobe": False}))
    root = synthetic_root / "k400"
    lines = (root / "test.csv").read_text().splitlines()[:4]
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    cfg = {
        "model": dataclasses.asdict(MODEL),
        "data": {"dataset": "k400", "data_root": str(root), "test_list": str(tmp_path / "test.csv"),
                 "short_side_size": 64, "sampling_rate": 2, "num_workers": 1,
                 "test_num_temporal_views": 2, "test_num_spatial_crops": 1},
        "deepspeed": {"precision": "fp32"},
        "run": {"device": "cpu", "output_dir": str(tmp_path / "run")},
        "test": {"batch_size": 3},
    }
    (tmp_path / "test.yaml").write_text(json.dumps(cfg))
    return tmp_path, str(root / lines[2].split()[0])


def test_a_video_failing_mid_decode_is_excluded_and_the_rest_reported(setup, monkeypatch):
    tmp, failing = setup
    monkeypatch.setattr(datasets, "open_video", FailsFromFrame(failing, 12))  # temporal view 1 of 2
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        rc = multiview_cli.main(["--config", str(tmp / "test.yaml"), "--checkpoint", str(tmp / "tiny.safetensors"),
                                 "--output_dir", str(tmp / "out")])
    assert rc == 0, printed.getvalue() + errors.getvalue()
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    assert [summary[f"num_videos_{k}"] for k in ("listed", "evaluated", "unreadable")] == [4, 3, 1]
    assert summary["unreadable_videos"][0]["path"] == failing
    assert "invalid data at frame 12" in summary["unreadable_videos"][0]["reason"]
    with open(tmp / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and failing not in {r["path"] for r in rows}
    assert summary["num_views_evaluated"] == 3 * 2
