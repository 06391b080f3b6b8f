"""DeepSpeed checkpoints (save, `latest`, resume) and exported weights.
Reading weights and checkpoint folders is `video_mcmae/weights.py`.

Layout of a run's output dir:
    epoch-0005/            a DeepSpeed checkpoint (`engine.save_checkpoint`, tag = completed epochs)
    best/                  finetuning: the best validation accuracy so far
    latest                 the tag of the newest *complete* epoch checkpoint
`latest` is written by us, atomically (tmp file + rename), only after every rank has finished
saving, so a run killed while saving leaves the previous `latest` in place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from typing import Any, Dict, List, Optional, Tuple

from safetensors.torch import save_file
from torch import nn

from video_mcmae.config import DataConfig, ModelConfig
from video_mcmae.engine import distributed as dist_utils
from video_mcmae.models import build_model
from video_mcmae.weights import (
    EXPORT_FORMAT,
    LATEST,
    CheckpointError,
    export_paths,
    read_latest,
    read_model_states,
    read_weights,
    resolve_checkpoint,
)

_EPOCH_TAG = re.compile(r"^epoch-(\d+)$")

# ---------------------------------------------------------------------------------------------
# Tags and the `latest` marker


def epoch_tag(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def epoch_tags(out_dir: str) -> List[str]:
    """Epoch checkpoint tags in `out_dir`, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    tags = [t for t in os.listdir(out_dir) if _EPOCH_TAG.match(t) and os.path.isdir(os.path.join(out_dir, t))]
    return sorted(tags, key=lambda t: int(_EPOCH_TAG.match(t).group(1)))


def write_latest(out_dir: str, tag: str) -> None:
    # One temporary name per writer: with a shared file system every node's first rank writes.
    tmp = os.path.join(out_dir, f".{LATEST}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(tag)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out_dir, LATEST))


def ensure_fresh_output(out_dir: str) -> None:
    """A new (not resumed) run must not write over an earlier run's checkpoints."""
    found = [t for t in epoch_tags(out_dir) + ["best"] if os.path.isdir(os.path.join(out_dir, t))]
    if found or os.path.exists(os.path.join(out_dir, LATEST)):
        how = ("continue that run with --auto_resume" if read_latest(out_dir)
               else f"continue that run with --resume {os.path.join(out_dir, found[-1])}" if found
               else "remove its stale 'latest' file")
        raise CheckpointError(
            f"run.output_dir {out_dir!r} already holds checkpoints ({', '.join(found) or LATEST}); "
            f"{how}, or pick another --opt run.output_dir=..."
        )


def checkpoint_epoch(path: str) -> int:
    """Completed epochs of a checkpoint, from its tag name or else its client state."""
    load_dir, tag = resolve_checkpoint(path)
    match = _EPOCH_TAG.match(tag)
    if match:
        return int(match.group(1))
    states = read_model_states(os.path.join(load_dir, tag), mmap=True)
    return int(states.get("epoch", 0))


def ensure_no_newer_checkpoints(out_dir: str, resume_path: str) -> None:
    """Resuming an older checkpoint into a dir with newer epoch checkpoints would overwrite them."""
    epoch = checkpoint_epoch(resume_path)
    newer = [t for t in epoch_tags(out_dir) if int(_EPOCH_TAG.match(t).group(1)) > epoch]
    if newer:
        raise CheckpointError(
            f"run.output_dir {out_dir!r} holds checkpoints newer than the resumed one (epoch {epoch}): "
            f"{', '.join(newer)}; they would be overwritten. Resume into another --output_dir, or resume "
            f"the newest with --auto_resume"
        )


# ---------------------------------------------------------------------------------------------
# Save / resume


def save_checkpoint(engine, out_dir: str, tag: str, client_state: Dict[str, Any], keep: int = 0,
                    mark_latest: bool = True) -> str:
    """Save on every rank; after all ranks are done, point `latest` at `tag` (epoch checkpoints)
    and drop epoch checkpoints beyond the newest `keep` (0 keeps all). Call on all ranks."""
    engine.save_checkpoint(out_dir, tag=tag, client_state=client_state, save_latest=False)
    dist_utils.barrier()
    # Each node's first process: nodes without a shared file system hold their own copies.
    if dist_utils.get_local_rank() == 0 and mark_latest:
        write_latest(out_dir, tag)
        if keep > 0:
            for old in epoch_tags(out_dir)[:-keep]:
                if old != tag:
                    shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)
    dist_utils.barrier()
    return os.path.join(out_dir, tag)


def find_auto_resume(out_dir: str) -> Optional[str]:
    """The newest complete checkpoint of a run, or None for a new run."""
    tag = read_latest(out_dir)
    return os.path.join(out_dir, tag) if tag else None


def load_checkpoint(engine, path: str, module_only: bool = False) -> Dict[str, Any]:
    """Restore a checkpoint into `engine` (everything, or only the weights); returns its client state."""
    load_dir, tag = resolve_checkpoint(path)
    loaded, client = engine.load_checkpoint(
        load_dir, tag=tag, load_module_only=module_only, load_optimizer_states=not module_only,
        load_lr_scheduler_states=False,
    )
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load {os.path.join(load_dir, tag)!r}")
    return client or {}


# ---------------------------------------------------------------------------------------------
# Exported weights


def export_weights(path: str, out_path: str, overwrite: bool = False) -> Tuple[str, str]:
    """Write `<out>.safetensors` + `<out>.json` (preset name, model and data config, epoch, source)
    from a DeepSpeed checkpoint (tag folder or run dir)."""
    sf_path, json_path = export_paths(out_path)
    for p in (sf_path, json_path):
        if os.path.exists(p) and not overwrite:
            raise CheckpointError(f"{p!r} exists; choose another output name or pass --overwrite")
    weights = read_weights(path, accept=("checkpoint",))
    config = weights.config
    if "model" not in config:
        raise CheckpointError(f"{path!r} has no run config in its client state; it was not written by video_mcmae")
    info = {
        "format": EXPORT_FORMAT,
        "preset": config["model"]["name"],
        "model": config["model"],
        "data": config.get("data"),  # how inputs were sampled and normalised (api.load reads it)
        "linprobe": weights.linprobe,
        "epoch": weights.meta.get("epoch"),
        "global_step": weights.meta.get("global_step"),
        "source": os.path.abspath(path),
    }
    os.makedirs(os.path.dirname(os.path.abspath(sf_path)), exist_ok=True)
    save_file(weights.state_dict, sf_path, metadata={"format": EXPORT_FORMAT, "preset": info["preset"]})
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return sf_path, json_path


def load_exported(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model, the export's .json) from an exported `.safetensors` (its `.json` beside it); no
    DeepSpeed needed."""
    weights = read_weights(path, accept=("export",))
    data = weights.config.get("data")
    model = build_model(ModelConfig(**weights.config["model"]), linprobe=weights.linprobe,
                        data=DataConfig(**data) if data else None)
    model.load_state_dict(weights.state_dict, strict=True)
    return model, weights.meta
