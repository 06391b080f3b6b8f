"""The DeepSpeed config dict, built from the run config or read from a user file and checked.

The optimizer (with its parameter groups) and the lr/wd schedule always come from the run
config's `optim` section: a user file may tune DeepSpeed (ZeRO buckets, precision, ...) but its
batch sizes must agree with the run config, and it may not define an optimizer or scheduler.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import hjson
import torch

from video_mcmae.config import Config, ConfigError

# DeepSpeed's own periodic prints are replaced by engine/logging.py.
_NO_PRINT = 2**31 - 1


def batch_sizes(cfg: Config, world_size: int) -> Dict[str, int]:
    """DeepSpeed's three batch keys: its micro-batch is the loader's batch of videos per rank."""
    o = cfg.optim
    return {
        "train_micro_batch_size_per_gpu": o.batch_size,
        "gradient_accumulation_steps": o.accum_steps,
        "train_batch_size": o.batch_size * o.accum_steps * world_size,
    }


def build_ds_config(cfg: Config, world_size: int) -> Dict[str, Any]:
    d, o = cfg.deepspeed, cfg.optim
    if d.config:
        return load_user_config(d.config, cfg, world_size)
    ds: Dict[str, Any] = dict(batch_sizes(cfg, world_size))
    ds.update({
        "steps_per_print": _NO_PRINT,
        "gradient_clipping": o.clip_grad or 0.0,
        "zero_optimization": {"stage": d.zero_stage, "contiguous_gradients": True},
        "bf16": {"enabled": d.precision == "bf16"},
        "fp16": {
            "enabled": d.precision == "fp16",
            "loss_scale": 0,  # 0 = dynamic loss scaling
            "initial_scale_power": d.initial_scale_power,
            "loss_scale_window": d.loss_scale_window,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
    })
    return ds


def load_user_config(path: str, cfg: Config, world_size: int) -> Dict[str, Any]:
    """Read a DeepSpeed json (comments allowed, as DeepSpeed itself reads it) and check it."""
    if not os.path.isfile(path):
        raise ConfigError(f"deepspeed.config: file not found: {path!r}; give an existing DeepSpeed json or leave it empty")
    try:
        with open(path, "r", encoding="utf-8") as f:
            ds = dict(hjson.load(f))
    except (hjson.HjsonDecodeError, ValueError, TypeError) as e:
        raise ConfigError(f"deepspeed.config {path!r} is not a valid DeepSpeed json: {e}") from None
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"deepspeed.config {path!r} defines {key!r}; the optimizer and lr schedule come from the "
                f"run config's optim section, so remove {key!r} from the json"
            )
    o = cfg.optim
    expected = batch_sizes(cfg, world_size)
    source = {
        "train_micro_batch_size_per_gpu": "optim.batch_size",
        "gradient_accumulation_steps": "optim.accum_steps",
        "train_batch_size": f"optim.batch_size {o.batch_size} x optim.accum_steps {o.accum_steps} x {world_size} ranks",
    }
    for key, want in expected.items():
        got = ds.get(key)
        if got is not None and got != want:
            raise ConfigError(
                f"batch size mismatch: DeepSpeed config {path!r} has {key}={got} but the run config gives "
                f"{want} ({source[key]}); make them agree (edit the json, or --opt the run config)"
            )
        ds[key] = want
    ds.setdefault("steps_per_print", _NO_PRINT)
    return ds


def initialize_engine(model, optimizer, cfg: Config, info):
    """`deepspeed.initialize` with our torch AdamW and the built/checked config; returns the engine."""
    # Imported after distributed.init: importing DeepSpeed fixes its accelerator (DS_ACCELERATOR)
    import deepspeed

    ds = build_ds_config(cfg, info.world_size)
    if info.device.type == "cpu" and ds.get("fp16", {}).get("enabled"):
        raise ConfigError("deepspeed.precision=fp16: DeepSpeed has no fp16 on the CPU; use bf16 or fp32")
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds, dist_init_required=False)
    return engine


def input_dtype(engine):
    """The dtype DeepSpeed keeps the module in, which inputs must match."""
    if engine.bfloat16_enabled():
        return torch.bfloat16
    if engine.fp16_enabled():
        return torch.float16
    return torch.float32
