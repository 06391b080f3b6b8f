"""A user error in a run of two ranks (a real gloo group, one process per rank): raised alike by
both it is one `error:` line from the main rank; raised by rank 1 alone it is printed by rank 1,
naming it, instead of being lost (only the main rank printed user errors before)."""
import json
import os
import subprocess
import sys

from video_mcmae.engine.distributed import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each rank runs one tool body per case, each in a fresh group: it raises the error the case
# names for it ("-" raises nothing: the rank works on for longer than the ranks wait for each
# other, as a rank in a collective would), and ends its stderr for the case with a marker line.
RANK = """
import json, os, sys, time
import torch.distributed as dist
from video_mcmae.cli import run_cli
from video_mcmae.cli.boundary import AGREE_SECONDS
from video_mcmae.errors import ConfigError
rank = int(os.environ["RANK"])
for port, texts in json.loads(sys.argv[1]):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    def body(text=texts[rank]):
        if text == "-":
            time.sleep(AGREE_SECONDS + 0.5)
            return 0
        raise ConfigError(text)
    print(f"=== status {run_cli(body)}", file=sys.stderr, flush=True)
"""

CASES = [  # (rank 0's error, rank 1's error) -> (rank 0's stderr, rank 1's stderr, statuses)
    (("bad key x: use y", "bad key x: use y"), ("error: bad key x: use y\n", "", [2, 2])),
    (("-", "cannot read /data/shard-1: check the path"),
     ("", "error (rank 1): cannot read /data/shard-1: check the path\n", [0, 2])),
    (("cannot read /data/shard-0: check the path", "-"), ("error: cannot read /data/shard-0: check the path\n", "", [2, 0])),
    (("cannot read /data/shard-0: check the path", "another error of rank 1"),
     ("error: cannot read /data/shard-0: check the path\n", "error (rank 1): another error of rank 1\n", [2, 2])),
]


def _split(stderr: str):
    """[(stderr of the case, its status)] from one rank's stderr."""
    out, lines = [], []
    for line in stderr.splitlines(keepends=True):
        if line.startswith("=== status "):
            out.append(("".join(lines), int(line.split()[-1])))
            lines = []
        else:
            lines.append(line)
    return out


def test_a_user_error_is_one_line_from_every_rank_that_has_its_own():
    ports = []
    while len(ports) < len(CASES):  # one fresh group per case
        ports = list(dict.fromkeys(ports + [free_port()]))
    cases = json.dumps([(port, texts) for port, (texts, _) in zip(ports, CASES)])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", RANK, cases], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    got = [_split(p.communicate(timeout=180)[1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], got
    for i, (texts, (err0, err1, statuses)) in enumerate(CASES):
        assert [got[0][i][0], got[1][i][0]] == [err0, err1], texts
        assert [got[0][i][1], got[1][i][1]] == statuses, texts
