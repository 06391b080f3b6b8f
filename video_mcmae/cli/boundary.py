"""How the command-line tools end: the one exception boundary of every tool in tools/.

Exit status: 0 done (or the status the tool's body returns); 2 a user-fixable error, printed as
one `error: <what> (<file>): <fix>` line on stderr (config, path, data list, weights or
checkpoint file, unreadable videos, a full or read-only disk, a file where a folder belongs; one
that a rank other than the main one raises alone is `error (rank <r>): ...`);
3 the training loss became NaN/inf; 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM (or the
launcher above a rank ended; `stopping`); 1 another rank of the run ended (a lost gloo peer). All
of these are one line. Anything else is a bug: it propagates with its traceback, which ends with
a note saying so. The library (`video_mcmae.api` and the rest) raises typed errors and prints
nothing.
"""
from __future__ import annotations

import errno
import pickle
import signal
import sys
import time
from typing import Any, Callable, Tuple, Type

from safetensors import SafetensorError

from video_mcmae.engine import distributed
from video_mcmae.errors import (
    ApiError, CheckpointError, ConfigError, DataListError, FolderInUseError, FolderNotSharedError, NonFiniteLossError, OutputError,
    TooManyBadFilesError, VideoReadError,
)

from . import stopping

USER_ERRORS: Tuple[Type[BaseException], ...] = (
    ConfigError, CheckpointError, DataListError, TooManyBadFilesError, VideoReadError, ApiError,
    FolderInUseError, FolderNotSharedError, OutputError, OSError, UnicodeDecodeError, SafetensorError, pickle.UnpicklingError,
)
NON_FINITE_LOSS_STATUS = 3
PEER_LOST_STATUS = 1
BUG_NOTE = "this is a bug in video_mcmae; please report it with the traceback above"
# How long the ranks of a run wait for each other to tell whether a user error is the same on all.
AGREE_SECONDS = 3.0

_OUTPUT_FIX = "free space, or write to another disk (--output_dir / run.output_dir / --out)"
_OS_FIXES = {
    errno.ENOSPC: "the disk is full: " + _OUTPUT_FIX,
    errno.EDQUOT: "the disk quota is used up: " + _OUTPUT_FIX,
    errno.EROFS: "the file system is read-only: write to a writable folder (--output_dir / run.output_dir / --out)",
    errno.EACCES: "use a path you may write (or read), or change its permissions",
    errno.EPERM: "use a path you may write (or read), or change its permissions",
    errno.EEXIST: "a file is where a folder is needed: remove it, or choose another output path",
    errno.ENOTDIR: "a file is where a folder is needed: remove it, or choose another output path",
    errno.EISDIR: "a folder is where a file is needed: give the path of a file",
    errno.ENOENT: "check the path",
}


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _torch_file_error(e: RuntimeError) -> str:
    """The message for torch's archive reader/writer failures ('' for other RuntimeErrors): they
    are RuntimeErrors that name neither the file nor the cause, e.g. '[enforce fail at
    inline_container.cc:672] . unexpected pos 576 vs 534' for a full disk."""
    text = _first_line(str(e))
    if "PytorchStreamReader" in text:
        return f"cannot read a torch file ({text}): the file is incomplete or not a torch file; use a complete copy"
    if "inline_container" in text or "PytorchStreamWriter" in text:
        detail = text.split("] . ", 1)[-1]
        return f"cannot write a torch file ({detail}): the disk is full or read-only; {_OUTPUT_FIX}"
    return ""


def message(e: BaseException) -> str:
    """The `error:` line's text for a user error (see the module docstring)."""
    if isinstance(e, UnicodeDecodeError):
        return (f"a text file is not UTF-8 (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}): "
                "save it as UTF-8")
    if isinstance(e, SafetensorError):
        verb = "write" if "serializing" in str(e) and "deserializing" not in str(e) else "read"
        fix = _OUTPUT_FIX if verb == "write" else "is the file complete? export or download it again"
        return f"cannot {verb} a .safetensors file ({_first_line(str(e))}): {fix}"
    if isinstance(e, pickle.UnpicklingError):
        return (f"cannot read a pickle file ({_first_line(str(e))}): it is damaged or not a torch file; "
                "give the weights as .safetensors or a weights-only .pth")
    if isinstance(e, VideoReadError):
        return f"{e}: replace the file, or check the list with tools/check_data_list.py (it writes a clean list)"
    if isinstance(e, OSError) and e.errno is not None:
        files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        what = e.strerror or str(e)
        fix = _OS_FIXES.get(e.errno, "check the path and the disk")
        return f"{what} ({files}): {fix}" if files else f"{what}: {fix}"
    return str(e)


def run_cli(body: Callable[[], Any], rank_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run a tool's `body` and return its exit status (body's own when it returns an int); the
    process group is destroyed either way.

    A user error (`USER_ERRORS`) is one line from the main rank when every rank raises it alike;
    one that another rank raises alone is printed by that rank, naming it (`_report_user_error`).
    `NonFiniteLossError` happens on every rank alike (the loss is reduced), so only the main rank
    prints it. `rank_errors` are the caller's own user errors that one rank may raise alone
    (exit status 2): the rank that raised one prints it. A stop (SIGTERM, Ctrl-C, the launcher
    gone: `stopping`) and the loss of another rank are one line from the main rank.
    """
    with stopping.on_signals(distributed.is_main):
        try:
            return _run(body, rank_errors)
        except (stopping.Stopped, KeyboardInterrupt) as e:
            if distributed.is_main():
                print(stopping.stop_message(e), file=sys.stderr, flush=True)
            return 128 + (e.signum if isinstance(e, stopping.Stopped) else signal.SIGINT)


def _run(body: Callable[[], Any], rank_errors: Tuple[Type[BaseException], ...]) -> int:
    try:
        result = body()
    except rank_errors as e:
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
        return 2
    except USER_ERRORS as e:
        _report_user_error(message(e))
        return 2
    except NonFiniteLossError as e:
        if distributed.is_main():
            print(f"error: {e}", file=sys.stderr, flush=True)
        return NON_FINITE_LOSS_STATUS
    except RuntimeError as e:
        if distributed.get_world_size() > 1 and stopping.peer_lost(e):
            if distributed.is_main():
                print(stopping.PEER_LOST_MESSAGE, file=sys.stderr, flush=True)
            return PEER_LOST_STATUS
        text = _torch_file_error(e)
        if not text:
            e.add_note(BUG_NOTE)
            raise
        _report_user_error(text)
        return 2
    except Exception as e:
        e.add_note(BUG_NOTE)
        raise
    finally:
        stopping.exiting()
        distributed.destroy()
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _report_user_error(text: str) -> None:
    """The `error:` line of a user error. The main rank prints its own. Another rank prints its
    error, naming its rank, unless the main rank reported the same text within `AGREE_SECONDS`: an
    error every rank raises alike (a config value) stays one line, and one that a single rank
    raises (a file only it reads) is not lost. The ranks compare through the process group's
    store, which still works when they can no longer meet in a collective."""
    store = distributed.store()
    rank = distributed.get_rank()
    if rank == 0:
        print(f"error: {text}", file=sys.stderr, flush=True)
        if store is None:
            return
        store.set("user_error/0", text)
        # Stay up (the store lives here) until the ranks with an error of their own have read it;
        # ranks without one never answer.
        _await(store, [f"user_error_read/{r}" for r in range(1, distributed.get_world_size())])
        return
    if store is None:
        return
    try:
        same = _await(store, ["user_error/0"]) and store.get("user_error/0").decode("utf-8") == text
        store.set(f"user_error_read/{rank}", "1")
    except RuntimeError:  # the main rank is gone
        same = False
    if not same:
        print(f"error (rank {rank}): {text}", file=sys.stderr, flush=True)


def _await(store, keys) -> bool:
    """Whether all `keys` are in the store within `AGREE_SECONDS`. Polled: the store's own timed
    wait logs a warning on every timeout, and here a timeout is an answer."""
    deadline = time.monotonic() + AGREE_SECONDS
    while not store.check(keys):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
