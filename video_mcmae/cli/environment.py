"""The process environment a command needs: written here, and nowhere else in the package.

- `DS_ACCELERATOR=cpu` for a run on the CPU (`run.device=cpu`, or `auto` without a GPU):
  DeepSpeed picks its accelerator once, when it is first imported, from this variable.
- A one-rank rendezvous for a plain `python tools/...` process (`RANK=0`, `WORLD_SIZE=1`,
  `LOCAL_RANK=0`, `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT`): DeepSpeed's engine reads
  `LOCAL_RANK` from the environment. Under a launcher (deepspeed, torchrun) its own are kept.
- `CUBLAS_WORKSPACE_CONFIG` with `run.deterministic`: cuBLAS reads it before the first CUDA
  matrix product, and deterministic cuBLAS kernels need it.

A variable already set is never changed. `run_environment` sets the missing ones for the
duration of a command and removes them afterwards, so a command run in-process (the tests)
leaves the environment as it found it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, Mapping

import torch

from video_mcmae.config import RunConfig
from video_mcmae.engine.distributed import free_port


def required_environment(run: RunConfig, environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """The variables a command with the run section `run` needs that `environ` lacks."""
    needed: Dict[str, str] = {}
    if run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available()):
        needed["DS_ACCELERATOR"] = "cpu"
    if "RANK" not in environ:
        needed.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        if "MASTER_PORT" not in environ:
            needed["MASTER_PORT"] = str(free_port())
    if run.deterministic:
        needed["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return {k: v for k, v in needed.items() if k not in environ}


@contextlib.contextmanager
def run_environment(run: RunConfig) -> Iterator[Dict[str, str]]:
    """Set what `required_environment` names while the block runs; yields what it set."""
    added = required_environment(run)
    os.environ.update(added)
    try:
        yield added
    finally:
        for key in added:
            os.environ.pop(key, None)
