"""Metrics of a merged multi-view test and its report: console lines, predictions.csv,
confusion_matrix.csv (+ .png), summary.json."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from matplotlib.figure import Figure

from video_mcmae.paths import write_atomic

from .merge import MergedViews

PLOT_MAX_CLASSES = 50  # larger confusion matrices are written as CSV only
REPORT_FILES = ("summary.json", "predictions.csv", "confusion_matrix.csv", "confusion_matrix.png")


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
    C = cm.shape[0]
    side = max(4.0, 0.3 * C + 2.0)
    fig = Figure(figsize=(side + 1.0, side))  # no pyplot: no global figure state, no GUI backend
    ax = fig.subplots()
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


def earlier_report(out_dir: str) -> Optional[str]:
    """A file of an earlier report in `out_dir`, or None: the tools replace a report only when
    told to (--overwrite)."""
    found = [os.path.join(out_dir, n) for n in REPORT_FILES if os.path.exists(os.path.join(out_dir, n))]
    return found[0] if found else None


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
    write_atomic(paths["summary"], lambda f: f.write(json.dumps(summary, indent=2, allow_nan=False).encode()))
    return paths
