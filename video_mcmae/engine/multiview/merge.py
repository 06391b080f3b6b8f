"""The exact merge of all ranks' shards into one score row per readable video.

`merge_views`
- drops the duplicates a `DistributedSampler` adds as padding, by the exact key;
- checks that every view of every readable video is present and names what is missing;
- excludes unreadable videos explicitly (they are reported, not counted);
- averages per video, over views in key order, softmax scores (or logits).

The merged scores are independent of the world size and of the order of the shards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Sequence, Tuple

import torch
import torch.nn.functional as F

from video_mcmae.errors import MultiViewError

from .shards import ViewManifest

MAX_LISTED = 20  # videos named in one error message before "... and N more"


@dataclass
class MergedViews:
    manifest: ViewManifest
    average: str
    video_index: torch.Tensor  # (V,) readable videos, ascending
    labels: torch.Tensor  # (V,)
    scores: torch.Tensor  # (V, C) float64; averaged softmax, or softmax of averaged logits
    view_logits: torch.Tensor  # (V, T*S, C) float32, views in (t, s) order
    unreadable: Dict[int, str]  # excluded videos: index -> reason
    duplicates_removed: int  # sampler padding
    meta: Dict[str, Any] = field(default_factory=dict)


def _describe_views(views: Iterable[Tuple[int, int]]) -> str:
    return ", ".join(f"(t={t}, s={s})" for t, s in views)


def _check_shards(shards: Sequence[Dict[str, Any]]) -> Tuple[ViewManifest, Dict[str, Any]]:
    if not shards:
        raise MultiViewError("no shards to merge")
    run_ids = sorted({s["run_id"] for s in shards})
    if len(run_ids) > 1:
        raise MultiViewError(f"shards come from {len(run_ids)} different runs ({', '.join(run_ids)}); "
                             "merge the shards of one run only (delete the stale shard files)")
    worlds = sorted({s["world_size"] for s in shards})
    if len(worlds) > 1:
        raise MultiViewError(f"shards disagree on the world size ({worlds}); merge one run's shards only")
    world = worlds[0]
    ranks = sorted(s["rank"] for s in shards)
    missing = sorted(set(range(world)) - set(ranks))
    if missing:
        raise MultiViewError(f"missing shard(s) for rank(s) {missing} of world size {world}; every rank "
                             "must finish and write its shard (look for a failed rank in the logs)")
    if len(ranks) != len(set(ranks)) or ranks != list(range(world)):
        raise MultiViewError(f"duplicate or out-of-range ranks {ranks} for world size {world}")
    failed = [s for s in sorted(shards, key=lambda s: s["rank"]) if s["error"]]
    if failed:
        raise MultiViewError("evaluation stopped early on " + "; ".join(
            f"rank {s['rank']}: {s['error']}" for s in failed) + "; fix the cause and re-run the test")
    manifest = shards[0]["manifest"]
    if any(s["manifest"] != manifest for s in shards[1:]):
        raise MultiViewError("shards disagree on the test list or view counts; they were not written "
                             "by one run of one config")
    return ViewManifest.from_dict(manifest), shards[0].get("meta", {})


def merge_views(shards: Sequence[Dict[str, Any]], average: str = "softmax") -> MergedViews:
    """Exact merge of all ranks' shards (any order) into one score row per readable video."""
    if average not in ("softmax", "logits"):
        raise MultiViewError(f"average must be 'softmax' or 'logits', got {average!r}")
    manifest, meta = _check_shards(shards)
    shards = sorted(shards, key=lambda s: s["rank"])
    T, S, C = manifest.num_temporal_views, manifest.num_spatial_views, manifest.num_classes
    num_videos = len(manifest.paths)
    keys = torch.cat([s["keys"].reshape(-1, 3).long() for s in shards])
    labels = torch.cat([s["labels"].reshape(-1).long() for s in shards])
    logits = torch.cat([s["logits"].reshape(-1, C).float() for s in shards])

    v, t, s = keys.unbind(1)
    bad = (v < 0) | (v >= num_videos) | (t < 0) | (t >= T) | (s < 0) | (s >= S)
    if bad.any():
        k = keys[bad][0].tolist()
        raise MultiViewError(f"view key (video={k[0]}, t={k[1]}, s={k[2]}) is outside the test list "
                             f"({num_videos} videos x {T} temporal x {S} spatial views)")
    expected_labels = torch.tensor(manifest.labels, dtype=torch.int64)
    wrong = labels != expected_labels[v]
    if wrong.any():
        i = int(v[wrong][0])
        raise MultiViewError(f"a view of video {i} ({manifest.paths[i]}) carries label "
                             f"{int(labels[wrong][0])} but the test list says {manifest.labels[i]}; "
                             "the dataset and the list disagree")

    # Exact de-duplication on the integer key: the ranges are checked above, so this linear
    # index is a bijection. Keep the first occurrence in rank order.
    linear = (v * T + t) * S + s
    order = torch.sort(linear, stable=True).indices
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = linear[order][1:] != linear[order][:-1]
    keep = order[first]
    duplicates = int(keys.shape[0] - keep.numel())

    unreadable: Dict[int, str] = {}
    for shard in shards:
        for idx, reason in shard["unreadable"]:
            unreadable.setdefault(int(idx), str(reason))
    readable = torch.ones(num_videos, dtype=torch.bool)
    if unreadable:
        readable[torch.tensor(sorted(unreadable))] = False
    keep = keep[readable[v[keep]]]  # views a rank decoded before another found the file bad

    present = torch.zeros(num_videos * T * S, dtype=torch.bool)
    present[linear[keep]] = True
    present = present.view(num_videos, T * S)
    incomplete = torch.nonzero(readable & ~present.all(1)).flatten().tolist()
    if incomplete:
        lines = []
        for i in incomplete[:MAX_LISTED]:
            gone = [(j // S, j % S) for j in torch.nonzero(~present[i]).flatten().tolist()]
            lines.append(f"  video {i} ({manifest.paths[i]}): missing {_describe_views(gone)}")
        more = f"\n  ... and {len(incomplete) - MAX_LISTED} more videos" if len(incomplete) > MAX_LISTED else ""
        raise MultiViewError(
            f"{len(incomplete)} readable video(s) lack views of the {T}x{S} grid:\n" + "\n".join(lines)
            + more + "\nre-run the test on the whole list (every rank must finish); views are never "
            "filled in from other videos")
    video_index = torch.nonzero(readable).flatten()
    if video_index.numel() == 0:
        raise MultiViewError(f"all {num_videos} videos of the test list are unreadable; nothing to evaluate")

    # `keep` is sorted by linear index, so rows are grouped per video in (t, s) order: the
    # averages add the same numbers in the same order whatever the world size.
    view_logits = logits[keep].view(-1, T * S, C)
    if average == "softmax":
        scores = F.softmax(view_logits.double(), dim=-1).mean(1)
    else:
        scores = F.softmax(view_logits.double().mean(1), dim=-1)
    return MergedViews(manifest=manifest, average=average, video_index=video_index,
                       labels=expected_labels[video_index], scores=scores, view_logits=view_logits,
                       unreadable=dict(sorted(unreadable.items())), duplicates_removed=duplicates,
                       meta=meta)
