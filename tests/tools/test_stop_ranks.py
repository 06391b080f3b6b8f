"""Stopping a 2-rank CPU run under the deepspeed launcher: SIGTERM to the launcher (which does not
pass it on to its ranks) and SIGINT to one rank each end every rank and the launcher within a few
seconds, with one `stopped` line and no traceback; `--auto_resume` then continues from the last
complete checkpoint and finishes the run.

The first run waits (tests/tools/killable_run_pretrain.py, PAUSE_AFTER) once `latest` names
epoch-0001, so that the launcher is stopped mid-run at a known point; the second is interrupted
while it trains."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLABLE = os.path.join(REPO, "tests", "tools", "killable_run_pretrain.py")
DEEPSPEED = os.path.join(os.path.dirname(sys.executable), "deepspeed")
STEPS, EPOCHS = 2, 5
# Well under the time of one epoch of a real run; on 2 shared CPU cores most of it is the ranks'
# own interpreter exit (4-13 s measured), the stop itself takes under a second.
STOP_WITHIN_S = 30


class Launch:
    """`deepspeed --num_gpus 2` running the pretraining, in a session of its own; output in `log`."""

    def __init__(self, args, env, log, pause=""):
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen([DEEPSPEED, *args], env=dict(env, PAUSE_AFTER=pause), stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def processes(self):
        """The runner and every process below it (launcher, ranks)."""
        root = psutil.Process(self.proc.pid)
        return [root] + root.children(recursive=True)

    def ranks(self):
        return [p for p in self.processes()[1:] if KILLABLE in p.cmdline() and "deepspeed.launcher" not in " ".join(p.cmdline())]

    def output(self):
        with open(self.log) as f:
            return f.read()

    def wait_for(self, condition, what, timeout=300):
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise AssertionError(f"run ended or timed out before {what}:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def stop(self, target, signum):
        """Send `signum` to `target` (a process of this launch); -> seconds until every process is gone."""
        everyone = self.processes()
        start = time.time()
        target.send_signal(signum)
        _, alive = psutil.wait_procs(everyone, timeout=60)
        took = time.time() - start
        if alive:
            self.kill()
            raise AssertionError(f"still running {took:.0f} s after {signum.name}: "
                                 f"{[p.pid for p in alive]}\n{self.output()[-3000:]}")
        self.proc.wait()
        return took

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stopped_cleanly(output):
    lines = [line for line in output.splitlines() if line.startswith("stopped")]
    assert len(lines) == 1 and "Traceback" not in output, output[-3000:]
    return lines[0]


@pytest.mark.slow
def test_sigterm_to_launcher_and_sigint_to_a_rank_stop_every_rank_then_auto_resume(
        tmp_path, synthetic_root, child_env, free_port, resume_run_args, log_records):
    out = tmp_path / "run"

    def launch(log, *extra, pause=""):
        args = ["--num_gpus", "2", "--master_port", free_port(), KILLABLE,
                *resume_run_args(out, synthetic_root, STEPS, EPOCHS, *extra)]
        return Launch(args, child_env, tmp_path / log, pause)

    # 1. SIGTERM to the deepspeed runner, once epoch-0001 is saved
    run = launch("sigterm.log", pause="epoch-0001")
    run.wait_for(lambda: (out / "latest").is_file() and len(run.ranks()) == 2, "epoch-0001 was saved")
    took = run.stop(psutil.Process(run.proc.pid), signal.SIGTERM)
    assert took < STOP_WITHIN_S, run.output()[-3000:]
    line = _stopped_cleanly(run.output())
    assert line.startswith("stopped by SIGTERM: its launcher (pid ") and line.endswith("with --auto_resume")
    assert (out / "latest").read_text() == "epoch-0001" and not (out / "run.lock").exists()

    # 2. resumed; SIGINT (as Ctrl-C sends) to rank 1 while it trains
    run = launch("sigint.log", "--auto_resume")
    run.wait_for(lambda: any(r["type"] == "iter" and r["epoch"] == 2 for r in log_records(out)), "it trained")
    rank1 = next(p for p in run.ranks() if p.environ().get("RANK") == "1")
    took_int = run.stop(rank1, signal.SIGINT)
    assert took_int < STOP_WITHIN_S, run.output()[-3000:]
    assert f"resuming {out / 'epoch-0001'}" in run.output()
    assert _stopped_cleanly(run.output()).startswith("stopped: another rank of this run ended")
    print(f"all processes gone {took:.1f} s after SIGTERM to the launcher, {took_int:.1f} s after SIGINT to rank 1")

    # 3. resumed again: runs to the end
    run = launch("finish.log", "--auto_resume")
    assert run.proc.wait(timeout=300) == 0, run.output()[-3000:]
    assert "resuming" in run.output() and (out / "latest").read_text() == f"epoch-{EPOCHS:04d}"
    assert [r for r in log_records(out) if r["type"] == "iter"][-1]["step"] == EPOCHS * STEPS
