"""DeepSpeed checkpoints (save, resume) and exported weights.

The run folder's layout (tags, `<tag>.partial`, `latest`, the resume lookup) is `video_mcmae/run_folder.py`;
reading weights and checkpoint folders is `video_mcmae/weights.py`.

A save is atomic at the folder level: every rank writes into `<tag>.partial/`, and only when all
of them are done is the folder renamed to `<tag>` (by rank 0; on nodes without a shared file
system by each node's first rank for its own copy); `latest` is replaced after that.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import save_file

from video_mcmae import run_folder
from video_mcmae.config import recorded_config
from video_mcmae.engine import distributed as dist_utils
from video_mcmae.errors import CheckpointError
from video_mcmae.paths import check_writable
from video_mcmae.weights import EXPORT_FORMAT, check_checkpoint_folder, export_paths, read_model_states, read_weights


def checkpoint_epoch(path: str) -> int:
    """Completed epochs of a checkpoint, from its tag name or else its client state."""
    load_dir, tag = run_folder.resolve_checkpoint(path)
    epoch = run_folder.epoch_of(tag)
    if epoch is not None:
        return epoch
    states = read_model_states(os.path.join(load_dir, tag), mmap=True)
    return int(states.get("epoch", 0))


# ---------------------------------------------------------------------------------------------
# Save / resume


def _publish(partial: str, final: str) -> None:
    """Give a finished save its final name; an earlier folder of that name (`best`) is replaced."""
    if os.path.isdir(final):
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)


def save_checkpoint(engine, out_dir: str, tag: str, client_state: Dict[str, Any], keep: int = 0,
                    mark_latest: bool = True) -> str:
    """Save on every rank into `<tag>.partial`; once all ranks are done, rename it to `tag`, then
    point `latest` at it (epoch checkpoints) and drop epoch checkpoints beyond the newest `keep`
    (0 keeps all). Call on all ranks."""
    final = os.path.join(out_dir, tag)
    partial = final + run_folder.PARTIAL
    # Each node's first process: nodes without a shared file system hold their own copies.
    first_on_node = dist_utils.get_local_rank() == 0
    if first_on_node:  # leftovers of an earlier save of this tag that did not finish
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final + ".old", ignore_errors=True)
    dist_utils.barrier()
    engine.save_checkpoint(out_dir, tag=tag + run_folder.PARTIAL, client_state=client_state, save_latest=False)
    dist_utils.barrier()
    if dist_utils.get_rank() == 0:
        _publish(partial, final)
    dist_utils.barrier()
    if first_on_node:
        if os.path.isdir(partial):  # this node's own copy (no file system shared with rank 0)
            _publish(partial, final)
        if mark_latest:
            run_folder.write_latest(out_dir, tag)
            if keep > 0:
                for old in run_folder.epoch_tags(out_dir)[:-keep]:
                    if old != tag:
                        shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)
    dist_utils.barrier()
    return final


def check_checkpoint(path: str) -> None:
    """`check_checkpoint_folder` for a tag folder or run dir: a resume calls it before it writes
    anything, so that a refused folder leaves the run untouched."""
    load_dir, tag = run_folder.resolve_checkpoint(path)
    check_checkpoint_folder(os.path.join(load_dir, tag))


def _in_memory(obj: Any) -> Any:
    """`obj` with every tensor copied out of the file it is mapped from: a tensor the engine kept
    mapped would die with a bus error once the file is rewritten in place."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return type(obj)((k, _in_memory(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_in_memory(v) for v in obj)
    return obj


class _CheckedReads:
    """An engine's DeepSpeed checkpoint engine for one `load_checkpoint`: `load` hands over what
    `check_checkpoint_folder` read (weights-only) instead of DeepSpeed's `torch.load(weights_only=False)`
    of the file; everything else goes to the wrapped engine."""

    def __init__(self, inner, checked: Dict[str, Any]):
        self._inner = inner
        self._checked = {os.path.abspath(p): obj for p, obj in checked.items()}

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load(self, path: str, map_location=None) -> Any:
        path = os.path.abspath(path)
        if path not in self._checked:
            raise CheckpointError(f"checkpoint file {path} is missing; is the checkpoint complete?")
        return _in_memory(self._checked[path])  # on the CPU, as DeepSpeed maps every file it reads


def load_checkpoint(engine, path: str, module_only: bool = False) -> Dict[str, Any]:
    """Restore a checkpoint into `engine` (everything, or only the weights); returns its client state.

    Every torch file of the folder is read weights-only first (`check_checkpoint_folder`; a file
    carrying code refuses the folder before anything is restored), and DeepSpeed's loader is handed
    those objects instead of reading the files again with `weights_only=False`. On a 1 MB ZeRO-1
    checkpoint of videoconvvit_tiny that costs what checking and then letting DeepSpeed read did
    (59 vs 61 ms CPU), with 0.14 instead of 1.58 MB read (the tensors are mapped and copied once).
    """
    load_dir, tag = run_folder.resolve_checkpoint(path)
    checked = check_checkpoint_folder(os.path.join(load_dir, tag))
    own = engine.checkpoint_engine
    engine.checkpoint_engine = _CheckedReads(own, checked)
    try:
        loaded, client = engine.load_checkpoint(
            load_dir, tag=tag, load_module_only=module_only, load_optimizer_states=not module_only,
            load_lr_scheduler_states=False,
        )
    finally:
        engine.checkpoint_engine = own
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load {os.path.join(load_dir, tag)!r}")
    return client or {}


# ---------------------------------------------------------------------------------------------
# Exported weights


def export_weights(path: str, out_path: str, overwrite: bool = False) -> Tuple[str, str]:
    """Write `<out>.safetensors` + `<out>.json` (preset name, model and data config, epoch, source)
    from a DeepSpeed checkpoint (tag folder or run dir)."""
    sf_path, json_path = export_paths(out_path)
    check_writable(os.path.dirname(os.path.abspath(sf_path)), "the export's folder")  # before the checkpoint is read
    for p in (sf_path, json_path):
        if os.path.exists(p) and not overwrite:
            raise CheckpointError(f"{p!r} exists; choose another output name or pass --overwrite")
    weights = read_weights(path, accept=("checkpoint",))
    config = recorded_config(weights.config)
    if "model" not in config:
        raise CheckpointError(f"{path!r} has no run config in its client state; it was not written by video_mcmae")
    info = {
        "format": EXPORT_FORMAT,
        "preset": config["model"]["name"],
        "model": config["model"],
        "data": config.get("data"),  # how inputs were sampled and normalised (api.load, from_weights read it)
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

