"""A 2-rank ZeRO-1 pretraining run SIGKILLed (every rank at once) in the middle of checkpoint
saves, at three points, each time restarted with --auto_resume: every restart resumes the last
complete checkpoint (a `.partial` folder is ignored, logged once, and never blocks the resume),
and the run ends at the same global step, lr and weights as an uninterrupted run.

The kills are placed by tests/tools/killable_run_pretrain.py (the run of tools/run_pretrain.py,
killing its process group at a named point of a named save: a save of a tiny model takes
milliseconds, too short to hit from outside by polling). The two ranks are started as plain
processes with the launcher's environment (RANK, WORLD_SIZE, MASTER_*), in one process group of
their own. One chain of kills covers the three points, and the uninterrupted reference runs
beside the first victim."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from video_mcmae.run_folder import epoch_tags, partial_checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLABLE = os.path.join(REPO, "tests", "tools", "killable_run_pretrain.py")
STEPS, EPOCHS = 2, 4


class TwoRanks:
    """Two ranks of one run in a process group of their own; rank r's output in `<log>-rank<r>.log`."""

    def __init__(self, args, env, port, log, kill_at=""):
        self.logs = [f"{log}-rank{r}.log" for r in (0, 1)]
        self.procs = []
        for rank in (0, 1):
            rank_env = dict(env, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=port, KILL_AT=kill_at)
            # rank 0 leads a new process group (in this session, so that rank 1 can join it)
            group = os.setpgrp if rank == 0 else _joiner(self.procs[0].pid)
            with open(self.logs[rank], "w") as f:
                self.procs.append(subprocess.Popen([sys.executable, KILLABLE, *args], env=rank_env,
                                                   stdout=f, stderr=subprocess.STDOUT, preexec_fn=group))

    def wait(self, timeout=400):
        try:
            return [p.wait(timeout=timeout) for p in self.procs]
        except subprocess.TimeoutExpired:
            os.killpg(self.procs[0].pid, signal.SIGKILL)
            raise AssertionError(f"the run hung:\n{self.output()[-3000:]}") from None

    def output(self, rank=None):
        ranks = (0, 1) if rank is None else (rank,)
        return "".join(open(self.logs[r]).read() for r in ranks)


def _joiner(pgid):
    return lambda: os.setpgid(0, pgid)


def _state(out):
    return ((out / "latest").read_text(), epoch_tags(str(out)), [os.path.basename(p) for p in partial_checkpoints(str(out))])


@pytest.mark.slow
def test_kills_during_saves_then_auto_resume_match_uninterrupted(tmp_path, synthetic_root, child_env, free_port,
                                                                  resume_run_args, final_state):
    ref_out, out = tmp_path / "reference", tmp_path / "run"
    killed = [-signal.SIGKILL] * 2

    def ranks(out, log, kill_at="", *extra):
        return TwoRanks(resume_run_args(out, synthetic_root, STEPS, EPOCHS, *extra), child_env, free_port(), log, kill_at)

    reference = ranks(ref_out, tmp_path / "reference")

    # 1. rank 0's model-states file in epoch-0002.partial is half written
    run = ranks(out, tmp_path / "kill1", "partial:epoch-0002")
    assert run.wait() == killed, run.output()[-3000:]
    assert _state(out) == ("epoch-0001", ["epoch-0001"], ["epoch-0002.partial"])
    assert reference.wait() == [0, 0], reference.output()[-3000:]

    # 2. resumes epoch-0001; killed once rank 1 has written its ZeRO file into epoch-0003.partial
    run = ranks(out, tmp_path / "kill2", "optim:epoch-0003", "--auto_resume")
    assert run.wait() == killed, run.output()[-3000:]
    assert f"resuming {out / 'epoch-0001'}" in run.output(0)
    assert run.output().count(f"ignoring {out / 'epoch-0002.partial'}: a checkpoint save that did not finish") == 1
    assert _state(out) == ("epoch-0002", ["epoch-0001", "epoch-0002"], ["epoch-0003.partial"])
    assert list((out / "epoch-0003.partial").glob("*zero_pp_rank_1_*optim_states.pt"))

    # 3. resumes epoch-0002; killed after epoch-0003 got its name, before `latest` names it
    run = ranks(out, tmp_path / "kill3", "latest:epoch-0003", "--auto_resume")
    assert run.wait() == killed, run.output()[-3000:]
    assert f"resuming {out / 'epoch-0002'}" in run.output(0)
    assert run.output().count(f"ignoring {out / 'epoch-0003.partial'}") == 1
    assert _state(out) == ("epoch-0002", ["epoch-0001", "epoch-0002", "epoch-0003"], [])

    # 4. resumes the newest complete checkpoint, epoch-0003, and finishes
    run = ranks(out, tmp_path / "finish", "", "--auto_resume")
    assert run.wait() == [0, 0], run.output()[-3000:]
    assert f"resuming {out / 'epoch-0003'}" in run.output(0) and "ignoring" not in run.output()
    assert _state(out) == ("epoch-0004", ["epoch-0001", "epoch-0002", "epoch-0003", "epoch-0004"], [])

    ref_w, ref_meta, ref_last = final_state(ref_out)
    w, meta, last = final_state(out)
    assert meta["global_step"] == ref_meta["global_step"] == EPOCHS * STEPS
    assert last["step"] == ref_last["step"] and last["lr"] == ref_last["lr"]
    assert last["loss"] == pytest.approx(ref_last["loss"], rel=1e-6)
    assert w.keys() == ref_w.keys()
    for name, ref in ref_w.items():
        torch.testing.assert_close(w[name], ref, rtol=1e-6, atol=1e-7, msg=name)
