"""Multi-view test: per-rank logits keyed by view, an exact merge across ranks, metrics, report.

Every test video is seen through `T x S` views (temporal view t, spatial crop s).

- `shards`: each rank keeps its logits keyed by `(video_index, temporal_view, spatial_view)`
  (`ViewCollector`) and writes them, with the test manifest, as a shard file; `gather_shards`
  collects every rank's shard over `torch.distributed`.
- `merge`: `merge_views` de-duplicates sampler padding by the exact key, checks that every view of
  every readable video is there, excludes unreadable videos explicitly and averages per video;
  the result does not depend on the world size or the order of the shards.
- `report`: `compute_metrics`, `format_report` and `write_report` (CSV, PNG, summary.json).
- `run`: the model and weights under test, the autocast policy, `run_test` / `merge_shards` (their
  command lines, tools/test_multiview.py and tools/merge_multiview.py, are `video_mcmae.cli.multiview`).

The package re-exports only the names imported from it (by the tools and tests); import anything
else from its submodule.
"""
from .merge import merge_views
from .report import compute_metrics, format_report, write_report
from .run import autocast_dtype, collect_views, load_test_model
from .shards import (
    ViewCollector,
    ViewManifest,
    gather_shards,
    load_shards,
    make_shard,
    save_shard,
)

__all__ = [
    "merge_views",
    "compute_metrics", "format_report", "write_report",
    "autocast_dtype", "collect_views", "load_test_model",
    "ViewCollector", "ViewManifest", "gather_shards", "load_shards", "make_shard", "save_shard",
]
