import os

import pytest

from video_mcmae.engine.distributed import free_port as _free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def child_env():
    """Environment for launching the tools as CPU subprocesses (one thread per rank, gloo)."""
    # A rendezvous left in this process's environment (in-process engine tests) must not leak.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                DS_ACCELERATOR="cpu")


@pytest.fixture
def free_port():
    """A function returning a free local TCP port (as a string) for a launcher's rendezvous."""
    return lambda: str(_free_port())
