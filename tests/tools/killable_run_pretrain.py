"""tools/run_pretrain.py for tests/tools/test_kill_during_save.py: the same run, SIGKILLed at one
point of one checkpoint save. KILL_AT=<point>:<tag> (unset: no kill). The kill takes the whole
process group, i.e. every rank at the same moment, like `kill -9 -PGID`:

    partial  rank 0's first file in `<tag>.partial/` is half written
    optim    rank 1 has written its ZeRO optimizer file into `<tag>.partial/`
    latest   the folder has its final name `<tag>`, `latest` is not updated yet

PAUSE_AFTER=<tag> instead makes rank 0 wait once it has pointed `latest` at `<tag>`,
for a test to stop the run there (tests/tools/test_stop_ranks.py, test_two_nodes.py).
"""
import os
import signal
import sys
import time

import torch

from video_mcmae import run_folder
from video_mcmae.cli.pretrain import main

POINT, _, TAG = os.environ.get("KILL_AT", "").partition(":")
RANK = int(os.environ.get("RANK", "0"))
PAUSE_AFTER = os.environ.get("PAUSE_AFTER", "")


def kill_every_rank():
    os.killpg(os.getpgrp(), signal.SIGKILL)


def save(obj, path, *args, _save=torch.save, **kwargs):
    _save(obj, path, *args, **kwargs)
    if os.path.basename(os.path.dirname(str(path))) == TAG + run_folder.PARTIAL:
        if POINT == "partial" and RANK == 0:
            os.truncate(path, os.path.getsize(path) // 2)
            kill_every_rank()
        if POINT == "optim" and RANK == 1 and str(path).endswith("optim_states.pt"):
            kill_every_rank()


def write_latest(out_dir, tag, _write=run_folder.write_latest):
    if POINT == "latest" and tag == TAG:
        kill_every_rank()
    _write(out_dir, tag)
    if tag == PAUSE_AFTER and RANK == 0:
        time.sleep(600)


if __name__ == "__main__":
    if POINT or PAUSE_AFTER:
        torch.save = save  # DeepSpeed's checkpoint engine calls torch.save
        run_folder.write_latest = write_latest
    sys.exit(main())
