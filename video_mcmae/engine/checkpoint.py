"""Models from configs, DeepSpeed checkpoints (save, `latest`, resume), and exported weights.
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

import torch
from safetensors.torch import save_file
from torch import nn

from video_mcmae.config import ConfigError, ModelConfig
from video_mcmae.engine import distributed as dist_utils
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
# Models


def is_pretraining_preset(name: str) -> bool:
    return "convmae" in name


def build_model(m: ModelConfig, linprobe: bool = False) -> nn.Module:
    """The timm preset `m.name` with the config's geometry and regularisation."""
    import timm

    from video_mcmae import models
    from video_mcmae.models import sparse

    if m.name not in models.PRESETS:
        raise ConfigError(f"model.name: unknown preset {m.name!r}; choose one of {', '.join(models.PRESETS)}")
    os.environ[sparse.BACKEND_ENV] = m.use_kernel  # the models read the depthwise-conv backend from here
    kwargs: Dict[str, Any] = {"img_size": m.img_size}
    if m.name.startswith("video"):
        kwargs.update(num_frames=m.num_frames, tubelet_size=m.tubelet_size)
    if is_pretraining_preset(m.name):
        if m.drop_path_rate or m.drop_rate:
            raise ConfigError("model.drop_path_rate/model.drop_rate apply to classifiers; set them to 0 for pretraining")
        kwargs.update(mask_ratio=m.mask_ratio, mask_type=m.mask_type, norm_pix_loss=m.norm_pix_loss, sparse=m.sparse)
    else:
        kwargs.update(num_classes=m.num_classes, drop_path_rate=m.drop_path_rate, head_drop_rate=m.drop_rate)
    try:
        model = timm.create_model(m.name, **{**kwargs, **m.kwargs})
    except TypeError as e:
        raise ConfigError(f"model.kwargs: {m.name} rejects the given arguments ({e})") from None
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if linprobe:
        model.head = LinearProbeHead(model.head)
    return model


class LinearProbeHead(nn.Module):
    """MAE's linear probe: BatchNorm1d without affine parameters in front of the linear head.
    The norm runs in fp32: DeepSpeed's half-precision module has no half BatchNorm on every device."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.norm = nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6)
        self.fc = head

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.norm.float()  # keep the statistics in fp32 when the engine casts the module
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.float()).to(self.fc.weight.dtype))


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


def check_same_model(client: Dict[str, Any], cfg_model: ModelConfig, path: str) -> None:
    saved = (client.get("config") or {}).get("model", {}).get("name")
    if saved is not None and saved != cfg_model.name:
        raise CheckpointError(
            f"checkpoint {path!r} holds a {saved!r} model but model.name is {cfg_model.name!r}; "
            "resume with the run's own config (config.yaml in its output dir)"
        )


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
    model = build_model(ModelConfig(**weights.config["model"]), linprobe=weights.linprobe)
    model.load_state_dict(weights.state_dict, strict=True)
    return model, weights.meta
