"""A tool told to stop ends with one line and the conventional status: Ctrl-C (130) and SIGTERM
(143) raise in the main thread so the tool's `finally` blocks run; the handlers are restored
afterwards; a process under a launcher finds the launcher chain above it."""
import os
import signal
import subprocess
import sys

from video_mcmae.cli import run_cli, stopping


def _sigterm_self():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    finally:
        print("cleanup ran", file=sys.stderr)


def test_sigterm_is_one_line_after_cleanup_and_handlers_are_restored(capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(_sigterm_self) == 143
    err = capsys.readouterr().err.splitlines()
    assert err == ["cleanup ran", "stopped by SIGTERM; a training run continues from its last complete checkpoint "
                                  "with --auto_resume"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_is_one_line(capsys):
    def body():
        raise KeyboardInterrupt
    assert run_cli(body) == 130
    assert capsys.readouterr().err == ("stopped by Ctrl-C (SIGINT); a training run continues from its last complete "
                                       "checkpoint with --auto_resume\n")


def test_a_signal_during_teardown_keeps_the_outcome(monkeypatch, capsys):
    """Once the tool has its outcome, a signal (the launcher ending the ranks after one was lost)
    neither raises a traceback out of the teardown nor replaces the status and its line."""
    from video_mcmae.cli import boundary

    def destroy():  # the teardown after the outcome: the process group is destroyed
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes for the handler to run between
            pass

    monkeypatch.setattr(boundary.distributed, "destroy", destroy)
    assert run_cli(lambda: 0) == 0
    assert capsys.readouterr().err == ""


def test_launcher_chain_is_found_from_the_command_lines():
    probe = "from video_mcmae.cli.stopping import launchers_above; print(len(launchers_above()))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    plain = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "0"
    # A process started by a stand-in named like torchrun's module counts its parent as a launcher.
    nested = f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {probe!r}]))"
    launched = subprocess.run([sys.executable, "-c", nested, "torch.distributed.run"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert launched.stdout.strip() == "1", launched.stderr
