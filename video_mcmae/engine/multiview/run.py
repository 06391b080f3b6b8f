"""The multi-view test run (`run_test`, tools/test_multiview.py) and the offline merge (`merge_shards`,
tools/merge_multiview.py): the model and its weights, the autocast policy, the per-rank
evaluation, the report."""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from video_mcmae import run_folder
from video_mcmae.data.factory import build_dataset, build_loader
from video_mcmae.data.loader import Loader, PartialBatch
from video_mcmae.data.device import to_model_input
from video_mcmae.engine import distributed
from video_mcmae.errors import CheckpointError, ConfigError, MultiViewError, VideoReadError
from video_mcmae.paths import check_writable
from video_mcmae.models import from_weights, is_pretraining
from video_mcmae.run_lock import hold_run_folder, lock_folder
from video_mcmae.weights import read_weights

from .merge import MergedViews, merge_views
from .report import compute_metrics, earlier_report, format_report, write_report
from .shards import (
    ViewCollector,
    ViewManifest,
    gather_shards,
    load_shards,
    make_shard,
    remove_shards,
    save_shard,
)

logger = logging.getLogger(__name__)

OUTPUT_FOLDER = "the test's output folder (--output_dir / test.output_dir)"
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
    if is_pretraining(cfg.model.name):
        raise MultiViewError(f"model.name={cfg.model.name!r} is a pretraining model; multi-view testing "
                             "needs a classifier preset (videoconvvit_*) and finetuned weights")
    if os.path.isfile(path) and not path.endswith(".safetensors"):
        raise MultiViewError(f"--checkpoint {path!r}: a file must be exported weights (.safetensors, "
                             "from tools/export_weights.py); DeepSpeed checkpoints are folders")
    if not path.endswith(".safetensors") and not os.path.isdir(path):
        raise MultiViewError(f"--checkpoint {path!r} not found; give a DeepSpeed checkpoint folder "
                             "(output/epoch-0100, or the run dir with 'latest') or exported .safetensors")
    weights = read_weights(path, accept=("export", "checkpoint"))
    _check_model_config(weights.config.get("model", {}), cfg.model, path)
    # An export is built as it was exported (its own model config: pooling, head options).
    try:
        model, _ = from_weights(weights, None if weights.form == "export" else cfg.model, strict=True)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; test with the run's own config (config.yaml in its output dir)") from None
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
                  mean: Sequence[float], std: Sequence[float], progress: bool = False) -> Tuple[ViewCollector, str]:
    """Logits of every view this rank's loader yields (clips normalised with `mean`/`std` on `device`).

    A video that passed the scan but fails to decode now (a `Loader` over a `VideoTestDataset`
    reports it in a `PartialBatch`) is excluded like the scan's unreadable videos: it is added to
    `loader.dataset.excluded`, the shard lists it as unreadable and the merge drops the views any
    rank decoded before. Any other failure (an out-of-memory, a bug) ends the loop and is returned
    as a message, so this rank still joins the gather and the merge reports it instead of the
    other ranks hanging."""
    model.eval()
    collector = ViewCollector()
    ours = isinstance(loader, Loader)
    try:
        for batch in tqdm(loader.batches() if ours else loader, total=len(loader) if ours else None,
                          desc="test views", unit="batch", disable=not progress, dynamic_ncols=True):
            if isinstance(batch, PartialBatch):
                for video, error in batch.errors.items():
                    _exclude(loader.dataset, video, error)
                if batch.batch is None:
                    continue
                batch = batch.batch
            clip, label, video, t, s = batch
            clip = to_model_input(clip, device, mean, std)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(clip)
            collector.add(logits.float(), label, video, t, s)
    except Exception as e:  # re-raised as a MultiViewError by the merge, naming this rank
        return collector, f"{type(e).__name__}: {e}"
    return collector, ""


def _exclude(dataset, video: int, error: VideoReadError) -> None:
    if any(i == video for i, _, _ in dataset.excluded):  # a later batch with more of its views
        return
    dataset.excluded.append((video, dataset.samples[video].path, error.reason))
    logger.warning("excluded test video %d: %s failed while decoding (%s)", video, error.path, error.reason)


def _report(merged: MergedViews, topk: Sequence[int], out_dir: str) -> Dict[str, Any]:
    metrics = compute_metrics(merged, topk)
    paths = write_report(merged, metrics, out_dir)
    print(format_report(merged, metrics), flush=True)
    others = ", ".join(os.path.basename(p) for k, p in paths.items() if k != "summary")
    print(f"report: {os.path.abspath(paths['summary'])} (+ {others})", flush=True)
    return metrics


def resolve_output_dir(cfg) -> str:
    return cfg.test.output_dir or run_folder.report_dir(cfg.run.output_dir)


def refuse_earlier_report(out_dir: str, overwrite: bool) -> None:
    """Before any work: an earlier report in `out_dir` is replaced only with --overwrite. Rank 0
    (the one that writes the report) decides for every rank."""
    found = None if overwrite else earlier_report(out_dir) if distributed.is_main() else None
    found = distributed.broadcast_object(found)
    if found:
        raise ConfigError(f"{found} exists (an earlier multi-view report); pass --overwrite to replace it "
                          "or choose another --output_dir")


def run_test(cfg, checkpoint: str, overwrite: bool = False) -> Optional[Dict[str, Any]]:
    """Evaluate every view of the test list on every rank, write shards, merge, report (rank 0).
    Returns the metrics on rank 0, None elsewhere."""
    info = distributed.init(cfg.run.device)
    out_dir = check_writable(resolve_output_dir(cfg), "the report folder (--output_dir / test.output_dir)")
    lock = hold_run_folder(out_dir, OUTPUT_FOLDER)  # before the report check: another test may be writing one
    try:
        if lock is not None and lock.taken_over:
            print(lock.takeover_note(), flush=True)
        return _run_test(cfg, info, out_dir, checkpoint, overwrite)
    finally:
        if lock is not None:
            lock.release()


def _run_test(cfg, info: distributed.DistInfo, out_dir: str, checkpoint: str,
              overwrite: bool) -> Optional[Dict[str, Any]]:
    refuse_earlier_report(out_dir, overwrite)
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
    collector, error = collect_views(model, loader, info.device, dtype, cfg.data.mean, cfg.data.std,
                                     progress=info.is_main)
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


def merge_shards(shard_dir: str, out_dir: str = "", average: str = "", overwrite: bool = False) -> Dict[str, Any]:
    """Offline merge of a shard folder; `average`/topk default to the run's test config."""
    out = check_writable(out_dir or os.path.dirname(os.path.abspath(shard_dir)), "the report folder (--output_dir)")
    with lock_folder(out, "--output_dir") as lock:
        if lock.taken_over:
            print(lock.takeover_note(), flush=True)
        refuse_earlier_report(out, overwrite)
        shards = load_shards(shard_dir)
        test_cfg = (shards[0].get("meta", {}).get("config") or {}).get("test", {})
        merged = merge_views(shards, average or test_cfg.get("average", "softmax"))
        return _report(merged, test_cfg.get("topk", [1, 5]), out)

