"""Per-rank collection of view logits and the shard files that carry them to the merge.

Each rank keeps its logits in memory keyed by the integer triple `(video_index, temporal_view,
spatial_view)` (`ViewCollector`). `make_shard` packs them with the test manifest (paths, labels,
view counts, unreadable videos) into a shard: a dict of tensors and plain values that
`save_shard` writes with `torch.save` and `load_shards` reads back with `weights_only=True`.
`gather_shards` collects every rank's shard over `torch.distributed` (gloo or nccl).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from video_mcmae.errors import CheckpointError, MultiViewError
from video_mcmae.paths import write_atomic
from video_mcmae.weights import load_torch_file

SHARD_FORMAT = "video_mcmae.multiview.shard/1"
SHARD_PATTERN = "shard-*-of-*.pt"


@dataclass
class ViewManifest:
    """What the test list promises: one entry per video, the view grid, the classes."""

    paths: List[str]  # video index -> path as given in the test list
    labels: List[int]  # video index -> label
    num_temporal_views: int
    num_spatial_views: int
    num_classes: int

    def to_dict(self) -> Dict[str, Any]:
        return {
            "paths": list(self.paths), "labels": [int(x) for x in self.labels],
            "num_temporal_views": int(self.num_temporal_views),
            "num_spatial_views": int(self.num_spatial_views), "num_classes": int(self.num_classes),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ViewManifest":
        return cls(**d)


class ViewCollector:
    """Keeps one rank's logits in memory, keyed by (video index, temporal view, spatial view)."""

    def __init__(self):
        self._keys: List[torch.Tensor] = []
        self._labels: List[torch.Tensor] = []
        self._logits: List[torch.Tensor] = []

    def add(self, logits: torch.Tensor, labels, video_index, temporal_view, spatial_view) -> None:
        """Record a batch: `logits (B, C)` and four length-B integer sequences/tensors."""
        cols = [torch.as_tensor(c).reshape(-1).to("cpu", torch.int64)
                for c in (video_index, temporal_view, spatial_view)]
        labels = torch.as_tensor(labels).reshape(-1).to("cpu", torch.int64)
        logits = logits.detach().to("cpu", torch.float32)
        if logits.dim() != 2 or any(c.numel() != logits.shape[0] for c in cols + [labels]):
            raise ValueError(
                f"ViewCollector.add: logits must be (B, C) with B labels and B keys; got logits "
                f"{tuple(logits.shape)}, {[c.numel() for c in cols]} keys, {labels.numel()} labels")
        self._keys.append(torch.stack(cols, dim=1))
        self._labels.append(labels)
        self._logits.append(logits)

    def __len__(self) -> int:
        return sum(k.shape[0] for k in self._keys)

    def tensors(self, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self._keys:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty.reshape(0, 3), empty, torch.zeros(0, num_classes)
        return torch.cat(self._keys), torch.cat(self._labels), torch.cat(self._logits)


def make_shard(collector: ViewCollector, manifest: ViewManifest, *, rank: int, world_size: int,
               run_id: str, unreadable: Optional[Dict[int, str]] = None,
               meta: Optional[Dict[str, Any]] = None, error: str = "") -> Dict[str, Any]:
    """One rank's contribution. `unreadable`: video index -> reason, as this rank saw it.
    `meta`: plain values carried to the report (config, checkpoint, class names). `error`: why
    this rank stopped early; the merge refuses such shards and says so."""
    keys, labels, logits = collector.tensors(manifest.num_classes)
    return {
        "format": SHARD_FORMAT, "run_id": str(run_id), "rank": int(rank), "world_size": int(world_size),
        "keys": keys, "labels": labels, "logits": logits,
        "unreadable": sorted([int(i), str(r)] for i, r in (unreadable or {}).items()),
        "manifest": manifest.to_dict(), "meta": dict(meta or {}), "error": str(error),
    }


def shard_path(directory: str, rank: int, world_size: int) -> str:
    return os.path.join(directory, f"shard-{rank:05d}-of-{world_size:05d}.pt")


def save_shard(shard: Dict[str, Any], directory: str) -> str:
    """Write atomically (no half-written shard is ever visible to a merge); returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = shard_path(directory, shard["rank"], shard["world_size"])
    write_atomic(path, lambda f: torch.save(shard, f))
    return path


def remove_shards(directory: str) -> None:
    """Delete shards of an earlier run so a merge of this directory cannot mix runs."""
    for path in glob.glob(os.path.join(directory, SHARD_PATTERN)):
        os.remove(path)


def load_shards(directory: str) -> List[Dict[str, Any]]:
    if not os.path.isdir(directory):
        raise MultiViewError(f"shard directory not found: {directory!r}; pass the `shards` folder "
                             "written by tools/test_multiview.py")
    paths = sorted(glob.glob(os.path.join(directory, SHARD_PATTERN)))
    if not paths:
        raise MultiViewError(f"no shard files ({SHARD_PATTERN}) in {directory!r}; run "
                             "tools/test_multiview.py first, or pass the folder that holds its shards")
    shards = []
    for path in paths:
        if not os.path.isfile(path):
            raise MultiViewError(f"shard {path!r} is not a file; remove it from the shard directory")
        try:
            shard = load_torch_file(path, "re-run tools/test_multiview.py to rewrite it")
        except CheckpointError as e:  # a truncated, foreign or hostile file, named in one line
            raise MultiViewError(f"cannot read shard {path!r}: {e}") from None
        if not isinstance(shard, dict) or shard.get("format") != SHARD_FORMAT:
            raise MultiViewError(f"{path!r} is not a multi-view shard ({SHARD_FORMAT}); remove it "
                                 "from the shard directory")
        shards.append(shard)
    return shards


def gather_shards(shard: Dict[str, Any]) -> List[Dict[str, Any]]:
    """All ranks' shards on every rank. Keys + labels (int64) and logits (float32) travel as
    tensors padded to the longest rank, on the current CUDA device for nccl; the small rest
    (manifest, unreadable videos, meta) travels with all_gather_object."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [shard]
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    n = torch.tensor([shard["keys"].shape[0]], device=device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    counts = [int(c.item()) for c in counts]

    def all_gather_rows(rows: torch.Tensor) -> List[torch.Tensor]:
        padded = rows.new_zeros((max(counts),) + rows.shape[1:], device=device)
        padded[: rows.shape[0]] = rows.to(device)
        received = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(received, padded)
        return [r[:c].cpu() for r, c in zip(received, counts)]

    ids = all_gather_rows(torch.cat([shard["keys"], shard["labels"][:, None]], dim=1))
    logits = all_gather_rows(shard["logits"])
    small = {k: v for k, v in shard.items() if k not in ("keys", "labels", "logits")}
    smalls: List[Optional[Dict[str, Any]]] = [None] * world
    dist.all_gather_object(smalls, small)
    return [dict(rest, keys=i[:, :3], labels=i[:, 3], logits=lg) for i, lg, rest in zip(ids, logits, smalls)]
