"""End to end: tools/test_multiview.py on the synthetic set with a tiny exported classifier,
then tools/merge_multiview.py on its shards."""
import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from video_mcmae.config import ModelConfig, load_config
from video_mcmae.engine.distributed import free_port
from video_mcmae.cli import multiview as multiview_cli
from video_mcmae.engine.multiview import load_shards, load_test_model, merge_views
from video_mcmae.errors import MultiViewError
from video_mcmae.models import build_model, from_weights
from video_mcmae.weights import EXPORT_FORMAT, MODEL_STATES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=4)
VIEWS = ["data.test_num_temporal_views=1", "data.test_num_spatial_crops=3"]


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    """Exported weights, a config, and a test list of 7 videos + 1 unreadable file (21 views:
    a two-rank sampler pads one)."""
    tmp = tmp_path_factory.mktemp("multiview")
    torch.manual_seed(0)
    model = build_model(MODEL)
    weights = tmp / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    (tmp / "tiny.json").write_text(json.dumps({"format": EXPORT_FORMAT, "preset": MODEL.name,
                                               "model": dataclasses.asdict(MODEL), "linprobe": False}))
    root = synthetic_root / "k400"
    lines = (root / "test.csv").read_text().splitlines()[:7]
    broken = tmp / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    lines.insert(3, f"{broken} 2")
    (tmp / "test.csv").write_text("\n".join(lines) + "\n")
    cfg = {
        "model": dataclasses.asdict(MODEL),
        "data": {"dataset": "k400", "data_root": str(root), "test_list": str(tmp / "test.csv"),
                 "class_names": str(root / "classes.txt"), "short_side_size": 64, "sampling_rate": 2,
                 "num_workers": 0},
        "deepspeed": {"precision": "fp32"},
        "run": {"device": "cpu", "output_dir": str(tmp / "run")},
        "test": {"batch_size": 5},
    }
    (tmp / "test.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return tmp, str(broken)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def one_process_run(setup):
    """tools/test_multiview.py's entry point in this process, one rank: (out dir, rc, stdout)."""
    tmp, _ = setup
    out = tmp / "one"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = multiview_cli.main(["--config", str(tmp / "test.yaml"), "--checkpoint", str(tmp / "tiny.safetensors"),
                           "--output_dir", str(out)] + sum((["--opt", o] for o in VIEWS), []))
    return out, rc, printed.getvalue()


@pytest.mark.slow
def test_end_to_end_one_process_then_offline_merge(setup, one_process_run, capsys):
    tmp, broken = setup
    out, rc, printed = one_process_run
    assert rc == 0, printed
    assert f"excluded unreadable video 3: {broken}" in printed
    assert "single-view (clip-level) accuracy" in printed
    summary = json.loads((out / "summary.json").read_text())
    counts = [summary[f"num_videos_{k}"] for k in ("listed", "evaluated", "unreadable")]
    assert counts == [8, 7, 1]
    assert summary["num_views_evaluated"] == 21 and summary["views_per_video"] == [1, 3]
    assert summary["unreadable_videos"][0]["path"] == broken
    assert summary["checkpoint"] == str(tmp / "tiny.safetensors")
    assert summary["config"]["data"]["test_num_spatial_crops"] == 3
    with open(summary["config"]["data"]["class_names"]) as f:
        assert summary["class_names"] == f.read().split()
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 7 and broken not in {r["path"] for r in rows}
    correct = sum(r["correct"] == "1" for r in rows)
    assert summary["video"]["top1"] == pytest.approx(100 * correct / 7)  # unreadable not counted
    assert summary["video"]["top4"] == 100.0 and summary["topk_clamped"] == {"5": 4}
    assert (out / "confusion_matrix.png").stat().st_size > 1000

    # the merged scores equal a direct evaluation of every view with the same weights
    shards = load_shards(str(out / "shards"))
    merged = merge_views(shards)
    from video_mcmae.data.factory import build_dataset
    from video_mcmae.data.device import normalize_batch

    cfg = load_config(str(tmp / "test.yaml"), VIEWS)
    ds = build_dataset(cfg, "test")
    model, _ = from_weights(str(tmp / "tiny.safetensors"))
    with torch.no_grad():
        clips = normalize_batch(torch.stack([ds[i][0] for i in range(len(ds))]), cfg.data.mean, cfg.data.std)
        logits = model.eval()(clips)
    expected = logits.softmax(-1).view(7, 3, 4).double().mean(1)
    torch.testing.assert_close(merged.scores, expected.to(merged.scores.dtype), atol=1e-5, rtol=0)

    # offline merge with the other averaging rule, into another folder
    assert multiview_cli.merge_main(["--shards", str(out / "shards"), "--average", "logits", "--output_dir", str(tmp / "merged")]) == 0
    summary2 = json.loads((tmp / "merged" / "summary.json").read_text())
    assert summary2["average"] == "logits" and summary2["single_view"] == summary["single_view"]
    # a missing view is an error naming the video, not a silent average over fewer views
    shard = shards[0]
    keep = ~((shard["keys"][:, 0] == 5) & (shard["keys"][:, 2] == 1))
    for k in ("keys", "labels", "logits"):
        shard[k] = shard[k][keep]
    (tmp / "cut").mkdir()
    torch.save(shard, tmp / "cut" / "shard-00000-of-00001.pt")
    assert multiview_cli.merge_main(["--shards", str(tmp / "cut")]) == 2
    assert "missing (t=0, s=1)" in capsys.readouterr().err


def test_user_errors_are_one_line(setup, capsys):
    tmp, _ = setup
    base = ["--config", str(tmp / "test.yaml"), "--output_dir", str(tmp / "err")]
    assert multiview_cli.main(base + ["--checkpoint", str(tmp / "nope.safetensors")]) == 2
    assert "exported weights need" in capsys.readouterr().err
    assert multiview_cli.main(base + ["--checkpoint", str(tmp / "tiny.safetensors"), "--opt", "model.num_frames=16"]) == 2
    assert "trained with model.num_frames=8 but the config says 16" in capsys.readouterr().err
    assert multiview_cli.merge_main(["--shards", str(tmp / "no_such_dir")]) == 2
    assert "shard directory not found" in capsys.readouterr().err


def test_deepspeed_checkpoint_folders(setup, tmp_path):
    """A tag folder and a run dir with `latest` (the files DeepSpeed + our client state write)
    give the same weights as the export; a config that does not fit is refused."""
    tmp, _ = setup
    cfg = load_config(str(tmp / "test.yaml"))
    exported = load_test_model(cfg, str(tmp / "tiny.safetensors")).state_dict()
    (tmp_path / "epoch-0003").mkdir()
    torch.save({"module": exported, "config": cfg.to_dict(), "epoch": 3}, tmp_path / "epoch-0003" / MODEL_STATES)
    (tmp_path / "latest").write_text("epoch-0003")
    for path in (tmp_path / "epoch-0003", tmp_path):
        loaded = load_test_model(cfg, str(path)).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in exported.items())
    with pytest.raises(MultiViewError, match="model.num_classes=4 but the config says 5"):
        load_test_model(load_config(str(tmp / "test.yaml"), ["model.num_classes=5"]), str(tmp_path))
    with pytest.raises(MultiViewError, match="is a pretraining model"):
        load_test_model(load_config(str(tmp / "test.yaml"), ["model.name=videoconvmae_tiny_patch16"]), str(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_torchrun_two_ranks_match_one(setup, one_process_run):
    tmp, _ = setup
    one, rc, printed = one_process_run
    assert rc == 0, printed
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2",
           "--master_port", str(free_port()), os.path.join(REPO, "tools", "test_multiview.py"),
           "--config", str(tmp / "test.yaml"), "--checkpoint", str(tmp / "tiny.safetensors"),
           "--output_dir", str(tmp / "two")] + sum((["--opt", o] for o in VIEWS), [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    summary = json.loads((tmp / "two" / "summary.json").read_text())
    assert summary["duplicate_views_removed"] == 1  # 21 views on 2 ranks
    assert len(list((tmp / "two" / "shards").glob("shard-*-of-00002.pt"))) == 2
    a, b = read_csv(one / "predictions.csv"), read_csv(tmp / "two" / "predictions.csv")
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert [float(r["score"]) for r in a] == pytest.approx([float(r["score"]) for r in b], abs=1e-5)


@pytest.mark.parametrize("earlier", ["summary.json", "predictions.csv", "confusion_matrix.png"])
def test_an_earlier_report_is_refused_without_overwrite(setup, tmp_path, capsys, earlier):
    tmp, _ = setup
    out = tmp_path / "report"
    (out / "shards").mkdir(parents=True)
    (out / earlier).write_text("an earlier report")
    (out / "shards" / "shard-00000-of-00001.pt").write_text("an earlier shard")
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    message = f"error: {out / earlier} exists (an earlier multi-view report); pass --overwrite to replace it"
    assert multiview_cli.main(["--config", str(tmp / "test.yaml"), "--checkpoint", str(tmp / "tiny.safetensors"),
                         "--output_dir", str(out)]) == 2
    assert [line for line in "".join(capsys.readouterr()).splitlines() if line.startswith(message)]
    assert multiview_cli.merge_main(["--shards", str(out / "shards")]) == 2  # the default output dir: the folder above
    assert [line for line in "".join(capsys.readouterr()).splitlines() if line.startswith(message)]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_report(setup, one_process_run, tmp_path):
    tmp, _ = setup
    one, rc, printed = one_process_run
    assert rc == 0, printed
    out = tmp_path / "report"
    shutil.copytree(one, out)
    assert multiview_cli.merge_main(["--shards", str(out / "shards"), "--average", "logits", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["average"] == "logits"
    assert multiview_cli.main(["--config", str(tmp / "test.yaml"), "--checkpoint", str(tmp / "tiny.safetensors"),
                         "--output_dir", str(out), "--overwrite"] + sum((["--opt", o] for o in VIEWS), [])) == 0
    assert json.loads((out / "summary.json").read_text())["average"] == "softmax"
