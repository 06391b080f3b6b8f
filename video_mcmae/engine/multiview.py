"""Multi-view test: per-rank logits keyed by view, an exact merge across ranks, metrics, report.

Every test video is seen through `T x S` views (temporal view t, spatial crop s). Each rank keeps
its logits in memory keyed by the integer triple `(video_index, temporal_view, spatial_view)`
(`ViewCollector`). `make_shard` packs them with the test manifest (paths, labels, view counts,
unreadable videos) into a shard: a dict of tensors and plain values that `save_shard` writes
with `torch.save` and `load_shards` reads back with `weights_only=True`. `gather_shards`
collects every rank's shard over `torch.distributed` (gloo or nccl). `merge_views` then

- drops the duplicates a `DistributedSampler` adds as padding, by the exact key;
- checks that every view of every readable video is present and names what is missing;
- excludes unreadable videos explicitly (they are reported, not counted);
- averages per video, over views in key order, softmax scores (or logits).

The merged scores are independent of the world size and of the order of the shards.
`compute_metrics` and `write_report` turn them into numbers and files.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

SHARD_FORMAT = "video_mcmae.multiview.shard/1"
SHARD_PATTERN = "shard-*-of-*.pt"
MAX_LISTED = 20  # videos named in one error message before "... and N more"
PLOT_MAX_CLASSES = 50  # larger confusion matrices are written as CSV only


class MultiViewError(ValueError):
    """Shards or views that cannot be merged into a complete, consistent result."""


# ---------------------------------------------------------------------------------------------
# Per-rank collection and shards


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
    tmp = path + ".tmp"
    torch.save(shard, tmp)
    os.replace(tmp, path)
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
        try:
            shard = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
            raise MultiViewError(f"cannot read shard {path!r} ({type(e).__name__}: {e}); "
                                 "re-run tools/test_multiview.py to rewrite it") from None
        if not isinstance(shard, dict) or shard.get("format") != SHARD_FORMAT:
            raise MultiViewError(f"{path!r} is not a multi-view shard ({SHARD_FORMAT}); remove it "
                                 "from the shard directory")
        shards.append(shard)
    return shards


def gather_shards(shard: Dict[str, Any]) -> List[Dict[str, Any]]:
    """All ranks' shards on every rank. Keys + labels (int64) and logits (float32) travel as
    tensors padded to the longest rank, on the current CUDA device for nccl; the small rest
    (manifest, unreadable videos, meta) travels with all_gather_object."""
    import torch.distributed as dist

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


# ---------------------------------------------------------------------------------------------
# Merge


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


# ---------------------------------------------------------------------------------------------
# Metrics


def ranked_classes(scores: torch.Tensor) -> torch.Tensor:
    """Classes by descending score; ties go to the lower class index (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def effective_topk(topk: Sequence[int], num_classes: int) -> List[int]:
    return sorted({min(int(k), num_classes) for k in topk})


def _topk_acc(ranked: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> Dict[str, float]:
    hit = ranked == labels[:, None]
    return {f"top{k}": float(hit[:, :k].any(1).double().mean()) * 100.0 for k in ks}


def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class."""
    return torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)


def compute_metrics(merged: MergedViews, topk: Sequence[int] = (1, 5)) -> Dict[str, Any]:
    C = merged.manifest.num_classes
    ks = effective_topk(topk, C)
    ranked = ranked_classes(merged.scores)
    pred = ranked[:, 0]
    views = merged.view_logits.reshape(-1, C)
    view_labels = merged.labels.repeat_interleave(merged.view_logits.shape[1])
    cm = confusion_matrix(merged.labels, pred, C)
    support = cm.sum(1)
    seen = support > 0
    per_class = cm.diagonal()[seen].double() / support[seen].double()
    return {
        "video": _topk_acc(ranked, merged.labels, ks),
        "single_view": _topk_acc(ranked_classes(views), view_labels, ks),
        "mean_class_accuracy": float(per_class.mean()) * 100.0,
        "classes_with_videos": int(seen.sum()),
        "topk_clamped": {str(k): min(int(k), C) for k in topk if int(k) > C},
        "num_videos_listed": len(merged.manifest.paths),
        "num_videos_evaluated": int(merged.video_index.numel()),
        "num_videos_unreadable": len(merged.unreadable),
        "views_per_video": [merged.manifest.num_temporal_views, merged.manifest.num_spatial_views],
        "num_views_evaluated": int(views.shape[0]),
        "duplicate_views_removed": merged.duplicates_removed,
        "average": merged.average,
        "confusion_matrix": cm,
        "ranked": ranked,
    }


def format_report(merged: MergedViews, metrics: Dict[str, Any]) -> str:
    T, S = metrics["views_per_video"]

    def acc(d: Dict[str, float]) -> str:
        return "  ".join(f"{k.replace('top', 'top-')} {v:.2f}%" for k, v in d.items())

    lines = [
        f"videos: {metrics['num_videos_evaluated']} evaluated of {metrics['num_videos_listed']} listed, "
        f"{metrics['num_videos_unreadable']} unreadable (excluded from every accuracy)",
        f"views: {T} temporal x {S} spatial = {T * S} per video, {metrics['num_views_evaluated']} evaluated"
        f" ({metrics['duplicate_views_removed']} sampler-padding duplicates removed)",
        f"video-level accuracy ({metrics['average']} averaged over views): {acc(metrics['video'])}",
        f"mean per-class accuracy (video-level top-1, {metrics['classes_with_videos']} classes): "
        f"{metrics['mean_class_accuracy']:.2f}%",
        f"single-view (clip-level) accuracy, not the video result: {acc(metrics['single_view'])}",
    ]
    for k, eff in metrics["topk_clamped"].items():
        lines.append(f"note: top-{k} clamped to top-{eff} (only {eff} classes)")
    for idx, reason in merged.unreadable.items():
        lines.append(f"excluded unreadable video {idx}: {merged.manifest.paths[idx]} ({reason})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Report files


def _plot_confusion(cm: torch.Tensor, names: List[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C = cm.shape[0]
    side = max(4.0, 0.3 * C + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(cm.numpy(), cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(C), labels=names, rotation=90, fontsize=7)
    ax.set_yticks(range(C), labels=names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if C <= 20:
        peak = int(cm.max()) or 1
        for i in range(C):
            for j in range(C):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(merged: MergedViews, metrics: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    """predictions.csv, confusion_matrix.csv (+ .png for <= 50 classes), summary.json.
    Class names come from `merged.meta['class_names']` when the run had them."""
    os.makedirs(out_dir, exist_ok=True)
    C = merged.manifest.num_classes
    class_names = merged.meta.get("class_names")
    names = class_names or [str(c) for c in range(C)]
    kmax = max(int(k[3:]) for k in metrics["video"])
    ranked = metrics["ranked"]
    paths = {"predictions": os.path.join(out_dir, "predictions.csv"),
             "confusion_csv": os.path.join(out_dir, "confusion_matrix.csv"),
             "summary": os.path.join(out_dir, "summary.json")}

    with open(paths["predictions"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = ["video_index", "path", "label", "prediction", "correct", f"top{kmax}", "score"]
        if class_names:
            header[3:3] = ["label_name", "prediction_name"]
        w.writerow(header)
        for row, idx in enumerate(merged.video_index.tolist()):
            label, pred = int(merged.labels[row]), int(ranked[row, 0])
            line = [idx, merged.manifest.paths[idx], label, pred, int(label == pred),
                    " ".join(str(c) for c in ranked[row, :kmax].tolist()),
                    f"{float(merged.scores[row, pred]):.6f}"]
            if class_names:
                line[3:3] = [names[label], names[pred]]
            w.writerow(line)

    cm = metrics["confusion_matrix"]
    with open(paths["confusion_csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted"] + names)
        for c in range(C):
            w.writerow([names[c]] + cm[c].tolist())
    if C <= PLOT_MAX_CLASSES:
        paths["confusion_png"] = os.path.join(out_dir, "confusion_matrix.png")
        _plot_confusion(cm, names, paths["confusion_png"])

    summary = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "ranked")}
    summary["unreadable_videos"] = [{"video_index": i, "path": merged.manifest.paths[i], "reason": r}
                                    for i, r in merged.unreadable.items()]
    summary.update(merged.meta)  # checkpoint, config, class names
    summary["files"] = {k: os.path.basename(p) for k, p in paths.items()}
    tmp = paths["summary"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
    os.replace(tmp, paths["summary"])
    return paths


# ---------------------------------------------------------------------------------------------
# Evaluation run (tools/test_multiview.py) and offline merge (tools/merge_multiview.py)


_MODEL_FIELDS = ("name", "num_classes", "num_frames", "img_size", "tubelet_size")


def _check_model_config(saved: Dict[str, Any], cfg_model, path: str) -> None:
    for key in _MODEL_FIELDS:
        if key in saved and saved[key] != getattr(cfg_model, key):
            raise MultiViewError(
                f"checkpoint {path!r} was trained with model.{key}={saved[key]!r} but the config says "
                f"{getattr(cfg_model, key)!r}; test with the run's config (config.yaml in its output dir) "
                f"or --opt model.{key}={saved[key]}")


def load_test_model(cfg, path: str) -> torch.nn.Module:
    """The classifier of `cfg.model` with the weights of a DeepSpeed checkpoint (tag folder or run
    dir with `latest`) or of exported `.safetensors` weights; checked against the config."""
    from video_mcmae.engine import checkpoint as ckpt

    if ckpt.is_pretraining_preset(cfg.model.name):
        raise MultiViewError(f"model.name={cfg.model.name!r} is a pretraining model; multi-view testing "
                             "needs a classifier preset (videoconvvit_*) and finetuned weights")
    if path.endswith(".safetensors") or os.path.isfile(path):
        if not path.endswith(".safetensors"):
            raise MultiViewError(f"--checkpoint {path!r}: a file must be exported weights (.safetensors, "
                                 "from tools/export_weights.py); DeepSpeed checkpoints are folders")
        model, meta = ckpt.load_exported(path)
        _check_model_config(meta.get("model", {}), cfg.model, path)
        return model
    if not os.path.isdir(path):
        raise MultiViewError(f"--checkpoint {path!r} not found; give a DeepSpeed checkpoint folder "
                             "(output/epoch-0100, or the run dir with 'latest') or exported .safetensors")
    weights, meta = ckpt.consolidated_state_dict(path)
    _check_model_config((meta.get("config") or {}).get("model", {}), cfg.model, path)
    model = ckpt.build_model(cfg.model, linprobe=bool(meta.get("linprobe", False)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise MultiViewError(f"checkpoint {path!r} does not fit {cfg.model.name}: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}; test with the run's own config")
    return model


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype on a GPU for `deepspeed.precision`; None (fp32) on the CPU and for fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise MultiViewError("deepspeed.precision=bf16 but this GPU has no bf16; use --opt deepspeed.precision=fp16")
    return torch.bfloat16 if precision == "bf16" else torch.float16


@torch.no_grad()
def collect_views(model: torch.nn.Module, loader, device: torch.device, dtype: Optional[torch.dtype],
                  progress: bool = False) -> Tuple[ViewCollector, str]:
    """Logits of every view this rank's loader yields. A failure (a file that passed the scan
    but breaks mid-decode, an out-of-memory) ends the loop and is returned as a message, so this
    rank still joins the gather and the merge reports it instead of the other ranks hanging."""
    from tqdm import tqdm

    model.eval()
    collector = ViewCollector()
    try:
        for clip, label, video, t, s in tqdm(loader, desc="test views", unit="batch", disable=not progress,
                                             dynamic_ncols=True):
            clip = clip.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(clip)
            collector.add(logits.float(), label, video, t, s)
    except Exception as e:  # re-raised as a MultiViewError by the merge, naming this rank
        return collector, f"{type(e).__name__}: {e}"
    return collector, ""


def _report(merged: MergedViews, topk: Sequence[int], out_dir: str) -> Dict[str, Any]:
    metrics = compute_metrics(merged, topk)
    paths = write_report(merged, metrics, out_dir)
    print(format_report(merged, metrics), flush=True)
    others = ", ".join(os.path.basename(p) for k, p in paths.items() if k != "summary")
    print(f"report: {os.path.abspath(paths['summary'])} (+ {others})", flush=True)
    return metrics


def resolve_output_dir(cfg) -> str:
    return cfg.test.output_dir or os.path.join(cfg.run.output_dir, "test")


def run_test(cfg, checkpoint: str) -> Optional[Dict[str, Any]]:
    """Evaluate every view of the test list on every rank, write shards, merge, report (rank 0).
    Returns the metrics on rank 0, None elsewhere."""
    import uuid

    from video_mcmae.data.datasets import build_dataset, build_loader
    from video_mcmae.engine import distributed

    info = distributed.init(cfg.run.device)
    out_dir = resolve_output_dir(cfg)
    shard_dir = os.path.join(out_dir, "shards")
    model = load_test_model(cfg, checkpoint)
    if cfg.model.compile:
        model = torch.compile(model)
    model.to(info.device)
    dtype = autocast_dtype(cfg.deepspeed.precision, info.device)
    dataset = build_dataset(cfg, "test", scan_progress=info.is_main)
    loader = build_loader(cfg, "test", dataset, info.rank, info.world_size)
    manifest = ViewManifest(paths=[s.path for s in dataset.samples], labels=[s.label for s in dataset.samples],
                            num_temporal_views=dataset.num_temporal_views,
                            num_spatial_views=dataset.num_spatial_crops, num_classes=cfg.model.num_classes)
    if info.is_main:
        precision = str(dtype or torch.float32).replace("torch.", "")
        if dtype is None and cfg.deepspeed.precision != "fp32":
            precision += f" (deepspeed.precision={cfg.deepspeed.precision} applies on GPUs only)"
        print(f"multi-view test: {len(dataset.samples)} videos ({len(dataset.excluded)} unreadable) x "
              f"{manifest.num_temporal_views} temporal x {manifest.num_spatial_views} spatial views on "
              f"{info.world_size} rank(s), {info.device}, {precision}", flush=True)
        remove_shards(shard_dir)
    run_id = distributed.broadcast_object(uuid.uuid4().hex)
    distributed.barrier()  # old shards are gone before any rank writes
    collector, error = collect_views(model, loader, info.device, dtype, progress=info.is_main)
    meta = {"checkpoint": os.path.abspath(checkpoint), "config": cfg.to_dict(),
            "class_names": getattr(dataset, "class_names", None)}
    shard = make_shard(collector, manifest, rank=info.rank, world_size=info.world_size, run_id=run_id,
                       unreadable={i: reason for i, _, reason in dataset.excluded}, meta=meta, error=error)
    save_shard(shard, shard_dir)
    shards = gather_shards(shard)
    if not info.is_main:
        if error:
            raise MultiViewError(f"rank {info.rank} stopped early: {error}")
        return None
    return _report(merge_views(shards, cfg.test.average), cfg.test.topk, out_dir)


def merge_shards(shard_dir: str, out_dir: str = "", average: str = "") -> Dict[str, Any]:
    """Offline merge of a shard folder; `average`/topk default to the run's test config."""
    shards = load_shards(shard_dir)
    test_cfg = (shards[0].get("meta", {}).get("config") or {}).get("test", {})
    merged = merge_views(shards, average or test_cfg.get("average", "softmax"))
    out = out_dir or os.path.dirname(os.path.abspath(shard_dir))
    return _report(merged, test_cfg.get("topk", [1, 5]), out)


def _cli(body) -> int:
    """User-caused errors: one line (`error: ...`) and exit status 2."""
    from video_mcmae.config import ConfigError
    from video_mcmae.data.lists import DataListError
    from video_mcmae.engine import distributed
    from video_mcmae.engine.checkpoint import CheckpointError

    try:
        body()
    except (ConfigError, CheckpointError, DataListError, MultiViewError, FileNotFoundError) as e:
        # config and path errors hit every rank alike; a merge error is raised on rank 0 and a
        # rank's own failure on that rank
        main = distributed.is_main() if torch.distributed.is_initialized() else os.environ.get("RANK", "0") == "0"
        if main or isinstance(e, MultiViewError):
            print(f"error: {e}", flush=True)
        return 2
    finally:
        distributed.destroy()
    return 0


def run_test_cli(argv: Optional[List[str]] = None) -> int:
    import argparse

    from video_mcmae.config import add_config_args, load_config

    parser = add_config_args(argparse.ArgumentParser(description="Multi-view test of a finetuned VideoConvViT"))
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="DeepSpeed checkpoint folder (tag folder, or run dir with 'latest') "
                             "or exported .safetensors")
    parser.add_argument("--output_dir", default="", help="shorthand for --opt test.output_dir=...")
    # The deepspeed launcher passes --local_rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    opts = list(args.opt) + ([f"test.output_dir={args.output_dir}"] if args.output_dir else [])
    return _cli(lambda: run_test(load_config(args.config, opts), args.checkpoint))


def merge_cli(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Merge the per-rank shards of a multi-view test offline")
    parser.add_argument("--shards", required=True, metavar="DIR", help="the `shards` folder of a test run")
    parser.add_argument("--output_dir", default="", help="where the report goes (default: the folder above DIR)")
    parser.add_argument("--average", choices=("softmax", "logits"), default="",
                        help="merge rule (default: the run's test.average)")
    args = parser.parse_args(argv)
    return _cli(lambda: merge_shards(args.shards, args.output_dir, args.average))
