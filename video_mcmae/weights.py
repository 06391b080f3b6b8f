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
import re
import stat
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from video_mcmae.errors import CheckpointError
from video_mcmae.presets import PRESETS
from video_mcmae.run_folder import MODEL_STATES, resolve_checkpoint

ZERO_OPTIM_STATES = "*zero_pp_rank_*optim_states.pt"
_ZERO_RANK = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")
# torch.save stores every zip member uncompressed, so a member of a torch file never declares more
# than the file's own size. A member declaring more was deflated by another tool; up to
# MAX_INFLATION times the file's size (plus INFLATION_SLACK for tiny files) is still read, so a
# re-zipped checkpoint works. Anything beyond is refused before it is inflated: a 1.5 MB file
# whose member inflates to 1.5 GB (1000:1) would otherwise drive a reader to gigabytes of memory.
MAX_INFLATION = 4
INFLATION_SLACK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER = "WeightsUnpickler error:"
_ADVICE = ("Weights only load failed", "Please file", "Check the documentation", "(1)", "(2)")
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
        # safetensors checks the header's offsets against the file's size and maps the tensors:
        # no amplification to bound here.
        try:
            source = load_file(path)
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {path} as a safetensors file ({err}); is the file complete?") from None
    else:
        source = load_torch_file(path, "give tensors saved with torch.save or safetensors",
                                 incomplete="is it a complete torch file? Else")
    return unwrap_state_dict(source, path)


# ---------------------------------------------------------------------------------------------
# Torch files


def check_zip_sizes(path: str) -> None:
    """Refuse a torch zip archive with a member whose declared uncompressed size is absurd for the
    file's size (`MAX_INFLATION`), naming the file and the member; nothing is inflated. Files
    that are not zip archives are left to the reader."""
    size = os.path.getsize(path)
    limit = MAX_INFLATION * size + INFLATION_SLACK
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        return
    total = 0
    for member in members:
        total += member.file_size
        if total > limit:
            raise CheckpointError(
                f"{path}: zip member {member.filename!r} declares {member.file_size} bytes uncompressed in a "
                f"{size}-byte file (more than {MAX_INFLATION}x the file; torch stores its files uncompressed); "
                "it was not read — the file is damaged or hostile: use a checkpoint written by torch.save")


def _error_detail(err: Exception) -> str:
    """torch's reason for refusing a file, one line: the global it refused, else its first line
    that is not advice (torch's pages suggest loading with weights_only=False, which would run
    the file's code); terminal colour codes removed."""
    text = _ANSI.sub("", str(err))
    found = _GLOBAL.search(text)
    if found:
        return f"unsupported global {found.group(1)}"
    lines = [line.split(_UNPICKLER, 1)[-1].strip() for line in text.splitlines()]
    lines = [line for line in lines if line and "weights_only" not in line and not line.startswith(_ADVICE)]
    return lines[0].rstrip(".") if lines else f"{type(err).__name__}: not a torch file"


def _import_types(names: Sequence[str]) -> list:
    # The classes themselves, imported only when a file holds them: deepspeed is heavy to import
    # (accelerator probing) and folders without ZeRO files never need it.
    types = []
    for name in names:
        module, _, attr = name.rpartition(".")
        types.append(getattr(importlib.import_module(module), attr))
    return types


def _not_plain_weights(path: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file {path} contains code or objects that are not plain weights ({what}); it was "
        "not loaded — only resume/export checkpoints you made or trust"
    )


def load_torch_file(path: str, fix: str, allowed: Sequence[str] = (), mmap: bool = False,
                    incomplete: str = "is the file complete? Else") -> Any:
    """A torch file read weights-only, with the globals named in `allowed` (dotted names) also
    permitted. Any other global (a function, a foreign class: code that unpickling would run)
    refuses the file, naming it and the global, before anything in it is built; so does a zip
    member declaring an absurd size (`check_zip_sizes`). Other failures raise a `CheckpointError`
    naming the file, torch's one-line reason, `incomplete` and the `fix`."""
    check_zip_sizes(path)
    found: Sequence[str] = ()
    # For a legacy (non-zip) torch file, torch's weights-only reader names the global it refuses.
    if zipfile.is_zipfile(path):
        try:
            found = get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # a damaged archive or pickle: name the file instead of a traceback
            raise CheckpointError(f"cannot read {path} as a torch file ({_error_detail(e)}); {incomplete} "
                                  f"{fix}") from None
        foreign = [name for name in found if name not in allowed]
        if foreign:
            raise _not_plain_weights(path, ", ".join(foreign))
    try:
        with safe_globals(_import_types(found)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        detail = _error_detail(e)
        if detail.startswith("unsupported global"):
            raise _not_plain_weights(path, detail.split()[-1]) from None
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint ({detail}); {incomplete} "
                              f"{fix}") from None


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


def _check_export_info(json_path: str, info: Dict[str, Any]) -> None:
    """Refuse an export record that was edited into something the export never writes."""
    model, data, preset = info.get("model"), info.get("data"), info.get("preset")
    problem = ("has no 'model' mapping" if not isinstance(model, dict)
               else "has a 'data' entry that is not a mapping" if data is not None and not isinstance(data, dict)
               else f"names preset {preset!r}, which is not a model preset" if preset not in PRESETS
               else f"names preset {preset!r} but its model is {model.get('name')!r}"
               if model.get("name", preset) != preset else "")
    if problem:
        raise CheckpointError(f"{json_path} {problem}; it was changed after the export: export the weights again "
                              "with tools/export_weights.py")


def _export(sf_path: str, info: Dict[str, Any]) -> Weights:
    _check_export_info(export_paths(sf_path)[1], info)
    config = {"model": info["model"], **({"data": info["data"]} if info.get("data") else {})}
    return Weights(read_state_dict_file(sf_path), "export", info["preset"], config, info, sf_path)


# ---------------------------------------------------------------------------------------------
# DeepSpeed checkpoint folders (written by engine/checkpoint.save_checkpoint)


def load_checkpoint_file(path: str, mmap: bool = True) -> Any:
    """One torch file of a DeepSpeed tag folder, read weights-only with `DEEPSPEED_TYPES` allowed
    (`load_torch_file`). Files that are not complete torch zip archives (a save cut short) are
    refused too."""
    if not zipfile.is_zipfile(path):  # DeepSpeed writes zip archives; the index is written last
        raise CheckpointError(f"cannot read {path} as a torch checkpoint file (not a complete zip archive); "
                              "the save that wrote it did not finish — use an earlier checkpoint")
    return load_torch_file(path, "use an earlier checkpoint", DEEPSPEED_TYPES, mmap,
                           incomplete="is the checkpoint complete? Else")


def _check_entries(ckpt_dir: str) -> None:
    """Refuse a tag folder holding anything but regular files (a FIFO, device or socket, a folder
    named like a shard, a dangling link), naming it, before any file of it is opened: DeepSpeed
    and `zero_to_fp32` open every `*.pt` they glob, and opening a FIFO blocks for ever."""
    for name in sorted(os.listdir(ckpt_dir)):
        entry = os.path.join(ckpt_dir, name)
        try:
            mode = os.stat(entry).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a dangling link")
            raise CheckpointError(f"{entry} is {kind}, not a file; a checkpoint folder holds only the files "
                                  "DeepSpeed wrote: remove it (nothing in the folder was read)")


def _check_zero_ranks(ckpt_dir: str, model_states: Any) -> None:
    """Refuse a ZeRO tag folder that lacks the optimizer file of any rank that saved it (the ranks
    are counted in the model states' `dp_world_size`): every rank refuses alike, before an engine
    waits on a rank that failed alone."""
    ranks = {int(m.group(1)) for m in map(_ZERO_RANK.search, glob.glob(os.path.join(ckpt_dir, ZERO_OPTIM_STATES))) if m}
    if not ranks:
        return
    world = model_states.get("dp_world_size") if isinstance(model_states, dict) else None
    world = world if isinstance(world, int) and world > 0 else max(ranks) + 1
    missing = sorted(set(range(world)) - ranks)
    if missing:
        shown = ", ".join(str(r) for r in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise CheckpointError(
            f"checkpoint folder {ckpt_dir} lacks the ZeRO optimizer file of rank(s) {shown} of the {world} that "
            "saved it (*zero_pp_rank_<rank>_*optim_states.pt); the copy is incomplete — copy the whole "
            "folder again, or use an earlier checkpoint")


def check_checkpoint_folder(ckpt_dir: str) -> Dict[str, Any]:
    """Refuse a tag folder unless it holds only regular files, a ZeRO optimizer file for every
    rank, and every torch file in it reads weights-only (`load_checkpoint_file`); returns path ->
    what the file holds, its tensors mapped from the file.

    Call before DeepSpeed or `zero_to_fp32` reads the folder (and before a resume writes anything):
    they unpickle every `*.pt` they use with `weights_only=False`, which would run code a file
    carries. `zero_to_fp32` then reads the files again, as it calls `torch.load` itself and takes
    no loaded state; the check maps the tensor data instead of reading it (on a 1 MB ZeRO-1
    checkpoint: 34 ms CPU and 0.14 MB read, of 73 ms for the whole consolidation).
    """
    _check_entries(ckpt_dir)
    model_states = os.path.join(ckpt_dir, MODEL_STATES)
    checked = {model_states: load_checkpoint_file(model_states)} if os.path.isfile(model_states) else {}
    _check_zero_ranks(ckpt_dir, checked.get(model_states))
    for path in sorted(glob.glob(os.path.join(ckpt_dir, "*.pt"))):
        if path not in checked:
            checked[path] = load_checkpoint_file(path)
    return dict(sorted(checked.items()))


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
