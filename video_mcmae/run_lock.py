"""One run per output folder: a lock held for the life of the run that writes there.

`lock_folder(folder)` creates the folder if needed and takes an exclusive `flock` on `run.lock`
inside it before anything else is written, then records the holder in the file (pid, host, start
time, command, a run id). Another run on the same folder is refused with one line naming that
holder (`FolderInUseError`, exit status 2 at the command line). The kernel drops the lock when the
holding process ends, however it ends (kill -9 included); a clean release removes the file, so a
holder record found on taking the lock is a run that was killed: `FolderLock.taken_over` keeps it
for the one log line that says so.

`hold_run_folder(folder)` is the same for the ranks of a run: rank 0 takes the lock, and every
rank then checks that it sees rank 0's record in the folder. A rank that does not (the folder
is on a disk of its own node, not a file system shared by the nodes) fails the start-up on every
rank with one line (`FolderNotSharedError`), before any rank writes there: saves, `latest` and
the multi-view shards assume that every rank writes into the same folder.

flock works on local file systems and, on Linux, on NFS (where it is emulated with byte-range
locks the server knows about).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

from video_mcmae.engine import distributed
from video_mcmae.errors import FolderInUseError, FolderNotSharedError

LOCK_FILE = "run.lock"


def describe(holder: Dict[str, Any]) -> str:
    """'pid 123 on host-a, started 2026-12-05 16:00:00 UTC: python tools/run_pretrain.py ...'."""
    if not holder:
        return "holder not recorded yet"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command')}")


def _read_record(fd: int) -> Dict[str, Any]:
    text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        record = json.loads(text)
    except ValueError:  # not written by this module: nothing to name
        return {"pid": "?", "host": "?", "started": "?", "command": text[:200]}
    return record if isinstance(record, dict) else {}


def read_holder(folder: str) -> Dict[str, Any]:
    """The record in `folder`'s lock file ({} when there is none)."""
    try:
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return _read_record(fd)
    finally:
        os.close(fd)


class FolderLock:
    """The lock on one folder, held until `release()` (or the end of the process)."""

    def __init__(self, folder: str, fd: int, holder: Dict[str, Any], taken_over: Dict[str, Any]):
        self.folder, self.path = folder, os.path.join(folder, LOCK_FILE)
        self.holder = holder
        self.taken_over = taken_over  # the record of a killed run whose lock this one took over
        self._fd: Optional[int] = fd

    @property
    def run_id(self) -> str:
        return self.holder["run"]

    def takeover_note(self) -> str:
        """The log line for a stale lock taken over ('' when the folder was free)."""
        if not self.taken_over:
            return ""
        return (f"taking over {self.path}: the run that held it ({describe(self.taken_over)}) "
                "ended without releasing it (killed)")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Removed while still locked: a lock file left behind is a run that was killed.
            os.unlink(self.path)
        except OSError:  # gone or read-only by now: the lock still goes with the descriptor
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folder(folder: str, what: str = "output folder") -> FolderLock:
    """Create `folder` if needed and lock it for this process; `what` names it in the refusal
    (e.g. 'run.output_dir'). Raises FolderInUseError while another process holds it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_record(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise FolderInUseError(
                f"{what} {folder} is in use by another run ({describe(holder)}); wait for it to end or stop "
                f"it, or choose another {what}") from None
        # A holder that ended cleanly removed the file while we opened it: lock the new one.
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        taken_over = _read_record(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "run": uuid.uuid4().hex}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(folder, fd, holder, taken_over)


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def hold_run_folder(folder: str, what: str = "run.output_dir") -> Optional[FolderLock]:
    """`lock_folder` for a run's ranks (call on every rank, after the process group is up): rank 0
    holds the lock and gets it back; every rank checks that it sees the lock's record, else the
    run stops on every rank (FolderNotSharedError). Other ranks get None."""
    lock, refusal = None, ""
    if distributed.is_main():
        try:
            lock = lock_folder(folder, what)
        except FolderInUseError as e:
            refusal = str(e)
    refusal, run_id = distributed.broadcast_object((refusal, lock.run_id if lock else ""))
    if refusal:
        raise FolderInUseError(refusal)
    if distributed.get_world_size() > 1:
        sees = read_holder(folder).get("run") == run_id
        blind = [who for who in _all_gather(None if sees else f"rank {distributed.get_rank()} on {socket.gethostname()}")
                 if who]
        if blind:
            if lock is not None:
                lock.release()
            raise FolderNotSharedError(
                f"{what} {os.path.abspath(folder)} is not one folder shared by all ranks: {', '.join(blind)} "
                f"cannot see the {LOCK_FILE} rank 0 holds there (a disk of its own node?); put it on a file "
                "system every node mounts at the same path")
    return lock


def _all_gather(value: Any) -> List[Any]:
    box: List[Any] = [None] * distributed.get_world_size()
    distributed.all_gather_object(box, value)
    return box
