"""How a tool stops when it is told to: SIGTERM, SIGINT (Ctrl-C), or the end of the launcher that
started this rank.

- SIGTERM and SIGINT raise `Stopped` in the main thread, so `finally` blocks run (logs closed, the
  output folder's lock released) and `run_cli` prints one line instead of a traceback. A second
  signal is ignored: the first one is being acted on. So is a signal after `exiting()`: the tool
  has its outcome and is tearing down (e.g. the launcher ending the ranks after one was lost).
- A signal can only be acted on between Python bytecodes, and a rank blocked in a collective
  waits for its peers. So the signal also starts a grace timer (through `signal.set_wakeup_fd`,
  written by the C-level handler at once): a process still alive `GRACE_S` seconds later exits
  there and then. Its peers then lose it and stop too (`peer_lost`).
- The deepspeed runner does not pass SIGTERM on to its ranks (only its multi-node pdsh mode
  does), and a launcher killed with SIGKILL passes on nothing. A rank started by a launcher
  (deepspeed's runner and `deepspeed.launcher.launch`, torchrun) therefore watches the chain of
  launcher processes above it and stops itself with SIGTERM once one of them has ended.

Forked children (DataLoader workers) get the default handlers back: they end with their parent.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, List, Optional, Tuple

import psutil

GRACE_S = 10.0
WATCH_EVERY_S = 0.5
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How a launcher's process shows in its command line (the script's or module's name).
LAUNCHERS = ("deepspeed", "torchrun", "deepspeed.launcher.launch", "deepspeed.launcher.runner",
             "torch.distributed.run", "torch.distributed.launch")


class Stopped(BaseException):
    """The process was told to stop (a BaseException, like KeyboardInterrupt: no `except
    Exception` in the library may swallow it)."""

    def __init__(self, signum: int, why: str = ""):
        self.signum = signum
        self.why = why
        super().__init__(why or signal.Signals(signum).name)


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


class _State:
    active = False
    stopping: Optional[int] = None  # the signal being acted on
    exiting = False  # the outcome is decided (`exiting()`): signals no longer raise
    why = ""  # set by the launcher watch before it signals this process
    pipe: Tuple[int, ...] = ()  # the wakeup pipe (read end, write end)


def _handler(signum: int, frame) -> None:
    if _State.stopping is not None or _State.exiting:
        return
    _State.stopping = signum
    raise Stopped(signum, _State.why)


def exiting() -> None:
    """The tool has its outcome (a result, an error line, a stop line): from here on a signal no
    longer raises `Stopped`, which would cut the teardown short with a traceback. The grace timer
    still ends a process that does not finish within `GRACE_S`."""
    _State.exiting = True


def _in_child_after_fork() -> None:
    if _State.active:
        for signum in SIGNALS:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in _State.pipe:
            os.close(fd)
        _State.active, _State.pipe = False, ()


os.register_at_fork(after_in_child=_in_child_after_fork)


def _grace(read_fd: int, done: threading.Event, is_main) -> None:
    """Wait for a signal byte on the wakeup pipe; then give the main thread `GRACE_S` seconds."""
    while not done.is_set():
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        signums = [b for b in data if b in SIGNALS]
        if not signums:
            continue
        if done.wait(GRACE_S):
            return
        if is_main():
            print(f"stopped: {signal_name(signums[0])}; the process did not end within {GRACE_S:.0f} s "
                  "(waiting on another rank?) and was ended", file=sys.stderr, flush=True)
        os._exit(128 + signums[0])


def _is_launcher(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return False
    # The interpreter, its options (-u, -m) and the script or module: e.g. python -u -m deepspeed.launcher.launch
    return any(os.path.basename(part) in LAUNCHERS for part in cmd[:4])


def launchers_above() -> List[psutil.Process]:
    """The launcher processes this process runs under: its parent if that is a launcher, that
    one's parent if that is one too, and so on ([] for a process a shell or a test started)."""
    chain = []
    proc = psutil.Process().parent()
    while proc is not None and _is_launcher(proc):
        chain.append(proc)
        proc = proc.parent()
    return chain


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _watch(chain: List[psutil.Process], done: threading.Event) -> None:
    while not done.wait(WATCH_EVERY_S):
        ended = next((p for p in chain if _gone(p)), None)
        if ended is not None:
            _State.why = f"its launcher (pid {ended.pid}) ended"
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextlib.contextmanager
def on_signals(is_main) -> Iterator[None]:
    """While the block runs (in the main thread): SIGTERM/SIGINT raise `Stopped`, the grace timer
    is armed, and a launched rank watches its launchers. `is_main()` says whether this process
    speaks for the run."""
    if threading.current_thread() is not threading.main_thread() or _State.active:
        yield
        return
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(read_fd, True)
    done = threading.Event()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _State.active, _State.stopping, _State.exiting, _State.why = True, None, False, ""
    _State.pipe = (read_fd, write_fd)
    threads = [threading.Thread(target=_grace, args=(read_fd, done, is_main), name="stop-grace", daemon=True)]
    chain = launchers_above()
    if chain:
        threads.append(threading.Thread(target=_watch, args=(chain, done), name="launcher-watch", daemon=True))
    for t in threads:
        t.start()
    try:
        yield
    finally:
        done.set()
        _State.active, _State.pipe = False, ()
        signal.set_wakeup_fd(previous_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.write(write_fd, b"\0")  # wakes the grace thread (a byte that is no signal) to see `done`
        threads[0].join()
        os.close(write_fd)
        os.close(read_fd)


def stop_message(e: BaseException) -> str:
    """The line for a run stopped by `e` (Stopped or KeyboardInterrupt)."""
    signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
    why = f": {e.why}" if isinstance(e, Stopped) and e.why else ""
    return (f"stopped by {signal_name(signum)}{why}; a training run continues from its last complete checkpoint "
            "with --auto_resume")


_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(e: BaseException) -> bool:
    """A collective failed because another rank of the group is gone (gloo's socket errors)."""
    return isinstance(e, RuntimeError) and any(text in str(e) for text in _PEER_LOST)


PEER_LOST_MESSAGE = ("stopped: another rank of this run ended (stopped, killed, or failed: its own output says "
                     "which); a training run continues from its last complete checkpoint with --auto_resume")
