"""A user error in a run of two ranks (a real gloo group, one process per rank): raised alike by
both it is one `error:` line from the main rank; raised by rank 1 alone it is printed by rank 1,
naming it, instead of being lost (only the main rank printed user errors before)."""
import os
import subprocess
import sys
import time

import pytest

from video_mcmae.engine.distributed import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each rank joins the group, then raises the error its argv names ("-" raises nothing: the rank
# works on for longer than the ranks wait for each other, as a rank in a collective would).
RANK = """
import sys, time
import torch.distributed as dist
from video_mcmae.cli import run_cli
from video_mcmae.cli.boundary import AGREE_SECONDS
from video_mcmae.errors import ConfigError
dist.init_process_group("gloo")
text = sys.argv[1]
def body():
    if text == "-":
        time.sleep(AGREE_SECONDS + 2)
        return 0
    raise ConfigError(text)
sys.exit(run_cli(body))
"""


def _run_two(rank0: str, rank1: str):
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, "-c", RANK, text], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, text in enumerate((rank0, rank1))]
    started = time.monotonic()
    outs = [p.communicate(timeout=120) for p in procs]
    return [p.returncode for p in procs], [err for _, err in outs], time.monotonic() - started


def test_an_error_of_every_rank_is_one_line_from_the_main_rank():
    codes, errs, _ = _run_two("bad key x: use y", "bad key x: use y")
    assert codes == [2, 2] and errs == ["error: bad key x: use y\n", ""], errs


def test_an_error_of_rank_1_alone_is_printed_by_rank_1():
    codes, errs, _ = _run_two("-", "cannot read /data/shard-1: check the path")
    assert codes == [0, 2] and errs == ["", "error (rank 1): cannot read /data/shard-1: check the path\n"], errs


@pytest.mark.parametrize("rank1", ["-", "another error of rank 1"])
def test_an_error_of_the_main_rank_keeps_its_own_line(rank1):
    codes, errs, took = _run_two("cannot read /data/shard-0: check the path", rank1)
    assert errs[0] == "error: cannot read /data/shard-0: check the path\n", errs
    assert errs[1] == ("" if rank1 == "-" else f"error (rank 1): {rank1}\n"), errs
    assert codes == [2, 0 if rank1 == "-" else 2]
