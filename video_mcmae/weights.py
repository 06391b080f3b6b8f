"""Reading weights from a path: the one place where checkpoint folders and weights files are opened.

`read_weights(path)` gives a `Weights` (state dict, recorded config, preset) for any of:

- an export of tools/export_weights.py: `<stem>.safetensors` with `<stem>.json` beside it
  (format tag, preset name, model and data config, epoch, source);
- a DeepSpeed checkpoint: a tag folder holding `mp_rank_00_model_states.pt` (`out/epoch-0005`),
  or a run's output dir whose `latest` file names one; the weights are consolidated to fp32
  for ZeRO stages 0/1/2 without an engine or a GPU;
- a state dict file: `.safetensors`, or `.pth`/`.pt` read with `weights_only=True`, optionally
  wrapped as `{'model': ...}` / `{'module': ...}` (official checkpoints) and with a DDP
  `module.` prefix.

Torch files are read here with `weights_only=True`. DeepSpeed (`engine.load_checkpoint`) and its
`zero_to_fp32` unpickle a tag folder with `weights_only=False`, so `check_checkpoint_folder` reads
every torch file of a folder weights-only first (allowing only the types DeepSpeed itself writes)
and refuses the folder otherwise; a DeepSpeed engine is then handed what it read
(`engine/checkpoint.py`), `zero_to_fp32` reads the folder again. Which folder a path names (a tag
folder, or a run dir's `latest`; never an unfinished `<tag>.partial`) is `run_folder.py`. Writing
checkpoints and exports is `engine/checkpoint.py`.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from video_mcmae.errors import CheckpointError
from video_mcmae.run_folder import MODEL_STATES, resolve_checkpoint

ZERO_OPTIM_STATES = "*zero_pp_rank_*optim_states.pt"
# The non-tensor types DeepSpeed (0.19) pickles into a tag folder: the ZeRO optimizer files hold the
# loss scaler (static; dynamic for fp16), the ZeRO stage and the address of every parameter
# fragment. Everything else in its files (tensors, dtypes, sizes, plain containers) and in our
# client state is allowed by torch's weights-only reader itself.
DEEPSPEED_TYPES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
EXPORT_FORMAT = "video_mcmae-weights-v1"
FORMS = ("export", "checkpoint", "state_dict")


@dataclass
class Weights:
    """What a path holds: tensors by parameter/buffer name and what was recorded beside them."""

    state_dict: Dict[str, torch.Tensor]
    form: str  # 'export', 'checkpoint' or 'state_dict'
    preset: Optional[str] = None  # the model preset they were trained as, when recorded
    # The recorded run config: a checkpoint's whole config, an export's 'model' (and 'data')
    # sections; empty for a bare state dict.
    config: Dict[str, Any] = field(default_factory=dict)
    # The rest of the record: the export's .json, or a checkpoint's epoch, global_step, linprobe.
    meta: Dict[str, Any] = field(default_factory=dict)
    path: str = ""  # where they were read from

    @property
    def linprobe(self) -> bool:
        """Trained with the linear-probe head (BatchNorm + linear)."""
        return bool(self.meta.get("linprobe", False))


def read_weights(path: str, accept: Sequence[str] = FORMS) -> Weights:
    """The weights at `path`, in any of the `accept`ed forms ('export', 'checkpoint', 'state_dict').

    A folder is a DeepSpeed checkpoint. A `.safetensors` with a video_mcmae `.json` beside it is
    an export. Other files are state dicts. Without 'state_dict', files must be exports; with
    only 'checkpoint', every path is taken as a checkpoint (and refused naming what one holds).
    """
    path = os.fspath(path)
    if "checkpoint" in accept and (os.path.isdir(path) or tuple(accept) == ("checkpoint",)):
        return _read_checkpoint(path)
    sf_path, json_path = export_paths(path)
    if "state_dict" not in accept:
        return _read_export(sf_path, json_path)
    if "export" in accept and path == sf_path and os.path.isfile(json_path):
        info = _read_export_info(json_path)
        if info.get("format") == EXPORT_FORMAT:  # another tool's .json beside a state dict: not ours
            return _export(sf_path, info)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights not found: {path!r}; give exported weights (.safetensors with its .json), a DeepSpeed "
            "checkpoint folder (or a run dir with 'latest'), or a state dict file (.pth, .pt, .safetensors)")
    return Weights(read_state_dict_file(path), "state_dict", path=path)


# ---------------------------------------------------------------------------------------------
# State dicts


def unwrap_state_dict(source: Any, path: str = "") -> Dict[str, torch.Tensor]:
    """The tensors of `source`, unwrapping `{'model': ...}` / `{'module': ...}` and a DDP `module.` prefix."""
    while isinstance(source, dict) and ("model" in source or "module" in source):
        source = source["model"] if "model" in source else source["module"]
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        where = f"{path}: " if path else ""
        raise CheckpointError(f"{where}weights must be a state dict of tensors (optionally wrapped in "
                              "{'model': ...} or {'module': ...})")
    if source and all(k.startswith("module.") for k in source):
        source = {k[len("module."):]: v for k, v in source.items()}
    return dict(source)


def read_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A `.safetensors` file, or a `.pth`/`.pt` file read with `weights_only=True` (no code runs)."""
    if path.endswith(".safetensors"):
        try:
            source = load_file(path)
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {path} as a safetensors file ({err}); is the file complete?") from None
    else:
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling failure: name the file instead of a pickle traceback
            # torch's weights-only refusal is a page of advice; its one line about this file is kept
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = next((line for line in lines[1:] if not line.startswith(("Please file", "Check the documentation"))),
                          lines[0] if lines else type(err).__name__)
            raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint ({detail}): it is not a "
                                  "torch file or holds objects other than tensors (never run here); export plain "
                                  "tensors (e.g. with safetensors) and load those") from None
    return unwrap_state_dict(source, path)


# ---------------------------------------------------------------------------------------------
# Exports (written by engine/checkpoint.export_weights)


def export_paths(path: str) -> Tuple[str, str]:
    """(`<stem>.safetensors`, `<stem>.json`) of an export named with or without its extension."""
    stem = path[: -len(".safetensors")] if path.endswith(".safetensors") else path
    return stem + ".safetensors", stem + ".json"


def _read_export_info(json_path: str) -> Dict[str, Any]:
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            info = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {json_path!r} as JSON ({err}); export again with "
                              "tools/export_weights.py") from None
    return info if isinstance(info, dict) else {}


def _read_export(sf_path: str, json_path: str) -> Weights:
    for p in (sf_path, json_path):
        if not os.path.isfile(p):
            raise CheckpointError(f"exported weights need {p!r}; export with tools/export_weights.py")
    info = _read_export_info(json_path)
    if info.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{json_path!r} is not a video_mcmae export (format {info.get('format')!r})")
    return _export(sf_path, info)


def _export(sf_path: str, info: Dict[str, Any]) -> Weights:
    config = {"model": info["model"], **({"data": info["data"]} if info.get("data") else {})}
    return Weights(read_state_dict_file(sf_path), "export", info["preset"], config, info, sf_path)


# ---------------------------------------------------------------------------------------------
# DeepSpeed checkpoint folders (written by engine/checkpoint.save_checkpoint)


def _not_plain_weights(path: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file {path} contains code or objects that are not plain weights ({what}); it was "
        "not loaded — only resume/export checkpoints you made or trust"
    )


def _deepspeed_types(names: Sequence[str]) -> list:
    # The classes themselves, imported only when a file holds them: deepspeed is heavy to import
    # (accelerator probing) and folders without ZeRO files never need it.
    types = []
    for name in names:
        module, _, attr = name.rpartition(".")
        types.append(getattr(importlib.import_module(module), attr))
    return types


def load_checkpoint_file(path: str, mmap: bool = True) -> Any:
    """One torch file of a DeepSpeed tag folder, read weights-only with `DEEPSPEED_TYPES` allowed.

    Any other global (a function, a foreign class: code that unpickling would run) refuses the
    file, naming it, before anything in it is built. Files that are not complete torch zip
    archives (a save cut short) are refused too.
    """
    if not zipfile.is_zipfile(path):  # DeepSpeed writes zip archives; the index is written last
        raise CheckpointError(f"cannot read {path} as a torch checkpoint file (not a complete zip archive); "
                              "the save that wrote it did not finish — use an earlier checkpoint")
    try:
        found = get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # a damaged archive or pickle: name the file instead of a traceback
        raise CheckpointError(f"cannot read {path} as a torch checkpoint file ({e}); is the checkpoint complete?") from None
    foreign = [name for name in found if name not in DEEPSPEED_TYPES]
    if foreign:
        raise _not_plain_weights(path, ", ".join(foreign))
    try:
        with safe_globals(_deepspeed_types(found)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        if "Weights only load failed" in lines[0]:  # allowed globals used in a way the reader refuses
            marker = "WeightsUnpickler error:"
            raise _not_plain_weights(path, next((line.split(marker, 1)[1].strip() for line in lines if marker in line),
                                                lines[0])) from None
        raise CheckpointError(f"cannot read {path} as a torch checkpoint file ({lines[0]}); "
                              "is the checkpoint complete?") from None


def check_checkpoint_folder(ckpt_dir: str) -> Dict[str, Any]:
    """Refuse a tag folder unless every torch file in it reads weights-only (`load_checkpoint_file`);
    returns path -> what the file holds, its tensors mapped from the file.

    Call before DeepSpeed or `zero_to_fp32` reads the folder (and before a resume writes anything):
    they unpickle every `*.pt` they use with `weights_only=False`, which would run code a file
    carries. `zero_to_fp32` then reads the files again, as it calls `torch.load` itself and takes
    no loaded state; the check maps the tensor data instead of reading it (on a 1 MB ZeRO-1
    checkpoint: 34 ms CPU and 0.14 MB read, of 73 ms for the whole consolidation).
    """
    return {path: load_checkpoint_file(path) for path in sorted(glob.glob(os.path.join(ckpt_dir, "*.pt")))
            if os.path.isfile(path)}


def read_model_states(ckpt_dir: str, mmap: bool = False) -> Dict[str, Any]:
    """The model-states file of a tag folder (module weights and our client state)."""
    states = load_checkpoint_file(os.path.join(ckpt_dir, MODEL_STATES), mmap=mmap)
    if not isinstance(states, dict) or "module" not in states:
        raise CheckpointError(f"{os.path.join(ckpt_dir, MODEL_STATES)!r} is not a DeepSpeed model-states file "
                              "(no 'module' weights); is it a DeepSpeed checkpoint?")
    return states


def _stage0_masters(states: Dict[str, Any]) -> Optional[Dict[str, torch.Tensor]]:
    """fp32 master weights of a non-ZeRO half-precision checkpoint, named by the optimizer's
    parameter order that we saved in the client state (`param_names`)."""
    opt, names = states.get("optimizer") or {}, states.get("param_names")
    if not names:
        return None
    module = states["module"]
    if "fp32_groups" in opt:  # unfused half-precision optimizer: one tensor per parameter
        tensors = [t for group in opt["fp32_groups"] for t in group]
    elif "fp32_groups_flat" in opt:  # fused: one flat tensor per group
        tensors = []
        for flat, group in zip(opt["fp32_groups_flat"], names):
            sizes = [module[n].numel() for n in group]
            tensors += [t.view(module[n].shape) for t, n in zip(flat.split(sizes), group)]
    else:
        return None
    flat_names = [n for group in names for n in group]
    return dict(zip(flat_names, tensors)) if len(flat_names) == len(tensors) else None


def consolidated_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """fp32 weights of any ZeRO stage 0/1/2 checkpoint (tag folder or output dir) and its client
    state, without DeepSpeed engines or GPUs."""
    load_dir, tag = resolve_checkpoint(path)
    ckpt_dir = os.path.join(load_dir, tag)
    check_checkpoint_folder(ckpt_dir)  # before zero_to_fp32 unpickles the folder
    states = read_model_states(ckpt_dir)
    # The module state holds every parameter and buffer in the engine's precision (frozen ones
    # only there under ZeRO-1); the optimizer's fp32 masters replace the trained ones.
    weights = dict(states["module"])
    if glob.glob(os.path.join(ckpt_dir, ZERO_OPTIM_STATES)):
        # deepspeed is heavy to import (accelerator probing) and only ZeRO folders need it
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights.update(get_fp32_state_dict_from_zero_checkpoint(load_dir, tag=tag))
    elif any(t.is_floating_point() and t.dtype != torch.float32 for t in weights.values()):
        weights.update(_stage0_masters(states) or {})
    out = {k: (v.float() if v.is_floating_point() else v).detach().clone().contiguous() for k, v in weights.items()}
    meta = {k: states[k] for k in ("epoch", "global_step", "config", "linprobe") if k in states}
    return out, meta


def _read_checkpoint(path: str) -> Weights:
    state, meta = consolidated_state_dict(path)
    config = meta.pop("config", None) or {}
    return Weights(state, "checkpoint", (config.get("model") or {}).get("name"), config, meta, path)
