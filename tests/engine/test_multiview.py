"""Merge and metrics of the multi-view test on hand-made logits (no model, no video)."""
import csv
import json
import math
import os
import random

import pytest
import torch
from torch.utils.data import DistributedSampler

from video_mcmae.engine.multiview import (
    ViewCollector, ViewManifest, autocast_dtype, collect_views, compute_metrics, format_report,
    load_shards, make_shard, merge_views, save_shard, write_report,
)
from video_mcmae.errors import MultiViewError


def manifest_for(labels, T, S, C):
    # every basename is "clip.mp4": videos are told apart by list index, never by file name
    return ViewManifest(paths=[f"videos/{i:02d}/clip.mp4" for i in range(len(labels))],
                        labels=list(labels), num_temporal_views=T, num_spatial_views=S, num_classes=C)


def view_logits(video, t, s, C):
    """Fixed pseudo-random logits per key, the same whichever rank computes them."""
    g = torch.Generator().manual_seed(1000 * video + 10 * t + s)
    return torch.randn(C, generator=g) * 3


def simulated_shards(manifest, world, run_id="run", unreadable=None, batch=4, logits_fn=view_logits):
    """Shards as `world` ranks would write them: DistributedSampler split (with its padding),
    items in dataset order (video, t, s), collected in batches."""
    T, S, C = manifest.num_temporal_views, manifest.num_spatial_views, manifest.num_classes
    skip = set(unreadable or {})
    items = [(v, t, s) for v in range(len(manifest.paths)) if v not in skip
             for t in range(T) for s in range(S)]
    shards = []
    for rank in range(world):
        indices = list(DistributedSampler(items, num_replicas=world, rank=rank, shuffle=False))
        col = ViewCollector()
        for i in range(0, len(indices), batch):
            keys = [items[j] for j in indices[i:i + batch]]
            v, t, s = zip(*keys)
            col.add(torch.stack([logits_fn(*k, C) for k in keys]), [manifest.labels[x] for x in v], v, t, s)
        mine = {k: r for k, r in (unreadable or {}).items() if k % world == rank}
        shards.append(make_shard(col, manifest, rank=rank, world_size=world, run_id=run_id,
                                 unreadable=mine, meta={"checkpoint": "ckpt.safetensors"}))
    return shards


# ---------------------------------------------------------------------------------------------
# Hand-computed example


def hand_logits(v, t, s, C):
    log = lambda p: torch.tensor(p, dtype=torch.float64).log().float()  # noqa: E731
    table = {
        # video 0, label 0: arithmetic mean of probabilities -> class 2, geometric -> class 1
        (0, 0, 0): log([0.6, 0.3, 0.1]), (0, 0, 1): log([0.01, 0.3, 0.69]),
        # video 1, label 2: exact tie between classes 1 and 2 in every view
        (1, 0, 0): torch.tensor([0.0, 1.0, 1.0]), (1, 0, 1): torch.tensor([0.0, 2.0, 2.0]),
        # video 2, label 1: clearly class 1
        (2, 0, 0): torch.tensor([0.0, 3.0, 0.0]), (2, 0, 1): torch.tensor([0.0, 2.0, 1.0]),
    }
    return table[(v, t, s)]


@pytest.fixture
def hand():
    return manifest_for([0, 2, 1], T=1, S=2, C=3)


def test_hand_computed_softmax_average(hand):
    merged = merge_views(simulated_shards(hand, 1, logits_fn=hand_logits), average="softmax")
    # the stored logits are float32, so the probabilities are recovered to ~1e-7
    torch.testing.assert_close(merged.scores[0], torch.tensor([0.305, 0.3, 0.395], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert merged.scores[1, 1] == merged.scores[1, 2]  # exact tie survives the merge
    m = compute_metrics(merged, topk=(1, 2, 5))
    assert m["ranked"][:, 0].tolist() == [2, 1, 1]  # tie -> lower class index
    assert m["ranked"][1].tolist() == [1, 2, 0]
    assert m["video"] == pytest.approx({"top1": 100 / 3, "top2": 100.0, "top3": 100.0})
    assert m["topk_clamped"] == {"5": 3}
    # views: argmax 0, 2 | 1, 1 (tie) | 1, 1 against labels 0 | 2 | 1
    assert m["single_view"]["top1"] == pytest.approx(50.0)
    assert m["confusion_matrix"].tolist() == [[0, 0, 1], [0, 1, 0], [0, 1, 0]]
    assert m["mean_class_accuracy"] == pytest.approx(100 / 3)
    assert (m["num_videos_evaluated"], m["num_views_evaluated"], m["duplicate_views_removed"]) == (3, 6, 0)


def test_hand_computed_logit_average(hand):
    merged = merge_views(simulated_shards(hand, 1, logits_fn=hand_logits), average="logits")
    geo = torch.tensor([0.6 * 0.01, 0.3 * 0.3, 0.1 * 0.69], dtype=torch.float64).sqrt()
    torch.testing.assert_close(merged.scores[0], geo / geo.sum(), atol=1e-6, rtol=0)
    m = compute_metrics(merged, topk=(1, 2))
    assert m["ranked"][:, 0].tolist() == [1, 1, 1]
    assert m["video"] == pytest.approx({"top1": 100 / 3, "top2": 200 / 3})  # video 0: top-2 is [1, 2]
    assert m["single_view"]["top1"] == pytest.approx(50.0)  # views do not depend on the average


# ---------------------------------------------------------------------------------------------
# World-size invariance, padding, exact keys


@pytest.mark.parametrize("average", ["softmax", "logits"])
def test_merge_identical_for_world_sizes_and_shard_order(average):
    manifest = manifest_for([v % 5 for v in range(7)], T=2, S=2, C=5)  # 28 views: padding for 3
    ref = merge_views(simulated_shards(manifest, 1), average=average)
    ref_m = compute_metrics(ref)
    for world in (2, 3):
        shards = simulated_shards(manifest, world, batch=3)
        random.Random(world).shuffle(shards)
        merged = merge_views(shards, average=average)
        assert torch.equal(merged.scores, ref.scores)  # bitwise, not approximately
        assert torch.equal(merged.video_index, ref.video_index)
        assert merged.duplicates_removed == (28 + world - 1) // world * world - 28
        m = compute_metrics(merged)
        assert m["video"] == ref_m["video"] and m["single_view"] == ref_m["single_view"]
        assert torch.equal(m["confusion_matrix"], ref_m["confusion_matrix"])


def test_keys_are_exact_not_string_concatenations():
    # The reference keyed views by str(t) + str(s): (1, 12) and (11, 2) both read "112".
    manifest = manifest_for([0], T=12, S=13, C=2)
    merged = merge_views(simulated_shards(manifest, 2))
    assert merged.view_logits.shape == (1, 156, 2)
    torch.testing.assert_close(merged.view_logits[0, 1 * 13 + 12], view_logits(0, 1, 12, 2))
    torch.testing.assert_close(merged.view_logits[0, 11 * 13 + 2], view_logits(0, 11, 2, 2))


def test_padding_duplicate_keeps_first_rank():
    manifest = manifest_for([0, 1], T=1, S=1, C=2)
    a, b = ViewCollector(), ViewCollector()
    a.add(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [0, 1], [0, 1], [0, 0], [0, 0])
    b.add(torch.tensor([[5.0, 0.0]]), [0], [0], [0], [0])  # padding repeat of video 0
    shards = [make_shard(c, manifest, rank=r, world_size=2, run_id="x") for r, c in enumerate((a, b))]
    merged = merge_views(shards[::-1], average="logits")
    assert merged.duplicates_removed == 1
    torch.testing.assert_close(merged.view_logits[0, 0], torch.tensor([1.0, 0.0]))


# ---------------------------------------------------------------------------------------------
# Errors and exclusions


def test_missing_shard_is_an_error():
    manifest = manifest_for([0, 1, 2], T=1, S=2, C=3)
    shards = simulated_shards(manifest, 3)
    with pytest.raises(MultiViewError, match=r"missing shard\(s\) for rank\(s\) \[1\] of world size 3"):
        merge_views([shards[0], shards[2]])


def test_missing_view_names_video_path_and_views():
    manifest = manifest_for([0, 1, 2], T=2, S=3, C=3)
    shard = simulated_shards(manifest, 1)[0]
    drop = (shard["keys"] == torch.tensor([1, 1, 0])).all(1) | (shard["keys"] == torch.tensor([1, 0, 2])).all(1)
    for k in ("keys", "labels", "logits"):
        shard[k] = shard[k][~drop]
    with pytest.raises(MultiViewError) as e:
        merge_views([shard])
    msg = str(e.value)
    assert "1 readable video(s)" in msg
    assert "video 1 (videos/01/clip.mp4): missing (t=0, s=2), (t=1, s=0)" in msg


def test_unreadable_video_is_reported_and_excluded():
    manifest = manifest_for([0, 1, 2, 0], T=1, S=2, C=3)
    shards = simulated_shards(manifest, 2, unreadable={1: "VideoReadError: moov atom not found"})
    merged = merge_views(shards)
    m = compute_metrics(merged)
    assert merged.video_index.tolist() == [0, 2, 3]
    assert merged.unreadable == {1: "VideoReadError: moov atom not found"}
    assert (m["num_videos_listed"], m["num_videos_evaluated"], m["num_videos_unreadable"]) == (4, 3, 1)
    assert m["num_views_evaluated"] == 6
    correct = (m["ranked"][:, 0] == merged.labels).sum().item()
    assert m["video"]["top1"] == pytest.approx(100 * correct / 3)  # denominator: readable videos
    text = format_report(merged, m)
    assert "excluded unreadable video 1: videos/01/clip.mp4 (VideoReadError: moov atom" in text
    assert "single-view (clip-level)" in text


def test_views_decoded_before_a_video_was_found_unreadable_are_dropped():
    manifest = manifest_for([0, 1], T=1, S=2, C=2)
    shards = simulated_shards(manifest, 1)
    shards[0]["unreadable"] = [[1, "decode failed at frame 40"]]
    merged = merge_views(shards)
    assert merged.video_index.tolist() == [0]
    assert merged.view_logits.shape == (1, 2, 2)


def test_mixed_runs_and_label_mismatch_are_errors():
    manifest = manifest_for([0, 1], T=1, S=1, C=2)
    a = simulated_shards(manifest, 2, run_id="a")
    b = simulated_shards(manifest, 2, run_id="b")
    with pytest.raises(MultiViewError, match="different runs"):
        merge_views([a[0], b[1]])
    a[1]["labels"][:] = 0
    with pytest.raises(MultiViewError, match=r"video 1 \(videos/01/clip.mp4\) carries label 0"):
        merge_views(a)


def test_key_outside_the_grid_is_an_error():
    manifest = manifest_for([0], T=1, S=1, C=2)
    col = ViewCollector()
    col.add(torch.zeros(1, 2), [0], [0], [0], [3])
    with pytest.raises(MultiViewError, match=r"\(video=0, t=0, s=3\) is outside"):
        merge_views([make_shard(col, manifest, rank=0, world_size=1, run_id="x")])


def test_all_unreadable_is_an_error():
    manifest = manifest_for([0], T=1, S=1, C=2)
    with pytest.raises(MultiViewError, match="all 1 videos"):
        merge_views(simulated_shards(manifest, 1, unreadable={0: "empty file"}))


# ---------------------------------------------------------------------------------------------
# Files


def test_shard_files_roundtrip_and_errors(tmp_path):
    manifest = manifest_for([0, 1, 2], T=2, S=1, C=3)
    for shard in simulated_shards(manifest, 3):
        save_shard(shard, str(tmp_path))
    loaded = load_shards(str(tmp_path))
    assert len(loaded) == 3
    assert torch.equal(merge_views(loaded).scores, merge_views(simulated_shards(manifest, 1)).scores)
    (tmp_path / "shard-00009-of-00010.pt").write_bytes(b"not a pickle")
    with pytest.raises(MultiViewError, match="cannot read shard .*shard-00009-of-00010.pt"):
        load_shards(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MultiViewError, match="no shard files"):
        load_shards(str(tmp_path / "empty"))
    with pytest.raises(MultiViewError, match="shard directory not found"):
        load_shards(str(tmp_path / "nowhere"))


def test_report_files(tmp_path):
    manifest = manifest_for([0, 2, 1], T=1, S=2, C=3)
    merged = merge_views(simulated_shards(manifest, 2, logits_fn=hand_logits))
    names = ["archery", "bowling", "cycling"]
    merged.meta = {"checkpoint": "w.safetensors", "config": {"model": {"num_classes": 3}}, "class_names": names}
    m = compute_metrics(merged, topk=(1, 5))
    paths = write_report(merged, m, str(tmp_path / "out"))
    with open(paths["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["prediction_name"] for r in rows] == ["cycling", "bowling", "bowling"]
    assert rows[1]["label_name"] == "cycling" and rows[1]["top3"] == "1 2 0"
    assert float(rows[0]["score"]) == pytest.approx(0.395, abs=1e-6)
    with open(paths["confusion_csv"]) as f:
        cm = list(csv.reader(f))
    assert cm[0] == ["true \\ predicted", "archery", "bowling", "cycling"]
    assert cm[3] == ["cycling", "0", "1", "0"]
    assert os.path.getsize(paths["confusion_png"]) > 1000
    summary = json.loads(open(paths["summary"]).read())
    assert summary["checkpoint"] == "w.safetensors" and summary["config"]["model"]["num_classes"] == 3
    assert summary["video"]["top1"] == pytest.approx(100 / 3) and summary["class_names"] == names


def test_failed_rank_is_reported():
    manifest = manifest_for([0, 1], T=1, S=1, C=2)
    shards = simulated_shards(manifest, 2)
    shards[1]["error"] = "VideoReadError: clip.1.mp4: invalid data at frame 12"
    with pytest.raises(MultiViewError, match="stopped early on rank 1: VideoReadError: clip.1.mp4"):
        merge_views(shards)


def test_collect_views_turns_a_failure_into_a_message():
    batches = [(torch.zeros(2, 3, 2, 4, 4), torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0]),
                torch.tensor([0, 1]))]

    def loader():
        yield from batches
        raise OSError("clip.7.mp4: invalid data at frame 12")

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96, 3))
    assert autocast_dtype("bf16", torch.device("cpu")) is None  # fp32 on the CPU
    collector, error = collect_views(model, loader(), torch.device("cpu"), None, [0.45] * 3, [0.225] * 3)
    assert len(collector) == 2 and error == "OSError: clip.7.mp4: invalid data at frame 12"
    collector, error = collect_views(model, batches, torch.device("cpu"), None, [0.45] * 3, [0.225] * 3)
    assert len(collector) == 2 and error == ""


def test_no_plot_above_50_classes(tmp_path):
    manifest = manifest_for([0, 1], T=1, S=1, C=51)
    merged = merge_views(simulated_shards(manifest, 1))
    paths = write_report(merged, compute_metrics(merged), str(tmp_path))
    assert "confusion_png" not in paths and not os.path.exists(tmp_path / "confusion_matrix.png")
    assert math.isfinite(json.loads(open(paths["summary"]).read())["mean_class_accuracy"])
