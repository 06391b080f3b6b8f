"""Process-group setup and rank helpers for the deepspeed launcher, torchrun, or a plain process.

`init()` joins the process group the environment describes (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and reads DeepSpeed's accelerator, which DeepSpeed picks once per
process from DS_ACCELERATOR. Nothing here writes the environment: a launcher exports the
rendezvous, and for a plain process the command-line layer sets a one-rank one and
DS_ACCELERATOR=cpu for a CPU run (`video_mcmae.cli.environment`).
"""
from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

from video_mcmae.config import ConfigError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a one-rank group or a launcher's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_cpu_shm_comm_op() -> None:
    # On the CPU accelerator DeepSpeed JIT-compiles its shared-memory all-reduce op
    # (`deepspeed_shm_comm`, 1-4 min of g++ on a small machine) when the process group starts.
    # gloo does the same reductions, so mark the op unavailable; DeepSpeed keeps this dict
    # for the life of the process and consults it before building. (Called by `init` once
    # DeepSpeed may be imported.)
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init(device: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Join (or create) the process group the environment describes and pick this rank's device."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA GPU is visible; use run.device=cpu or auto")
    missing = [k for k in RENDEZVOUS if k not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"no process group in the environment ({', '.join(missing)} unset): start the run with a launcher "
            "(deepspeed, torchrun) or a tool in tools/, or inside video_mcmae.cli.environment.run_environment(cfg.run)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    # Imported only now: importing DeepSpeed fixes its accelerator, which reads DS_ACCELERATOR.
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    if device == "cpu" and accel.device_name() != "cpu":
        raise ConfigError(f"run.device=cpu but DeepSpeed's accelerator is {accel.device_name()!r}: set "
                          "DS_ACCELERATOR=cpu before DeepSpeed is imported (the tools in tools/ do)")
    if accel.device_name() == "cpu":
        _skip_cpu_shm_comm_op()
        dev = torch.device("cpu")
    else:
        accel.set_device(local_rank)
        dev = torch.device(accel.device_name(local_rank))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=accel.communication_backend_name(),
                                   timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def get_rank() -> int:
    # Before init (e.g. a config error) the launcher's RANK still tells who should speak.
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(out: List[Any], obj: Any) -> None:
    """`out[r]` = rank r's `obj` (out has one slot per rank)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_gather_object(out, obj)
    else:
        out[0] = obj


def store():
    """The process group's key-value store (the launcher's rendezvous), or None without a group of
    several ranks. Ranks that can no longer meet in a collective (one of them failed) can still
    leave each other a word there."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return None
    # torch exposes the default group's store only through this accessor.
    return dist.distributed_c10d._get_default_store()


def derived_seed(*keys: int) -> int:
    """A well-mixed 31-bit seed from (seed, epoch, rank, ...): nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """`run.deterministic`: torch's deterministic algorithms and cuDNN's deterministic mode, for
    CUDA, where atomics and cuDNN's algorithm search otherwise make gradients vary from call to
    call. An op without a deterministic CUDA implementation warns (naming it) instead of failing;
    cuBLAS reads its workspace setting (CUBLAS_WORKSPACE_CONFIG, set by the command-line layer)
    before the first CUDA matrix product. The CPU kernels this project runs give the same bits on
    every call at a fixed thread count without it (tests/models/test_determinism.py).
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
