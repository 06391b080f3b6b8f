"""Output locations and long lists of paths: the checks every tool makes before its work starts.

`check_writable(path, what)` refuses an output folder that cannot be written *before* hours of
work (a multi-view test, an export, a training run) rather than at the first write. It creates
nothing: a probe file is made and removed in the folder, or, when the folder does not exist yet,
in the nearest folder above it that does (the tools create the rest). The probe is an actual
create, not `os.access`: root passes `os.access` on a read-only mount, and a read-only file
system only shows itself on a write.

`write_atomic(path, write)` replaces a file so that a kill, a full disk or a reader at the same
moment sees the old file or the new one, never half of one.

`summarise(items, what, list_path)` turns a list of thousands of bad paths into one line (count,
the first few, the file holding all of them). Imports nothing of the package but `errors`.
"""
from __future__ import annotations

import errno
import os
import socket
import tempfile
from typing import IO, Callable, Optional, Sequence

from video_mcmae.errors import OutputError

SHOWN = 3  # items named in a summary line


def check_writable(path: str, what: str) -> str:
    """The absolute `path` of an output folder, after checking that files can be created in it.

    what: how the user gave it (e.g. '--output_dir', 'test.output_dir'), named in the message.
    Raises `OutputError` (one line: the folder, why, the fix) when a file is where the folder or
    one of its parents should be, or the nearest existing folder refuses a new file.
    """
    path = os.path.abspath(os.fspath(path))
    existing = path
    while not os.path.isdir(existing):
        # A folder that appeared since the line above is fine: another rank of the run made it.
        if os.path.lexists(existing) and not os.path.isdir(existing):
            raise OutputError(f"{what} ({existing}): a file is where a folder is needed: remove it, or choose "
                              "another output folder")
        existing = os.path.dirname(existing)
    try:  # a random name: every rank of every node may probe the same folder at once
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = ("the file system is read-only" if e.errno == errno.EROFS
               else "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT)
               else f"it is not writable ({e.strerror})")
        where = "" if existing == path else f" (its nearest existing folder {existing!r})"
        raise OutputError(f"{what} {path!r}{where}: {why}; choose a folder you may write, or change its "
                          "permissions") from None
    return path


def summarise(names: Sequence[str], what: str, list_path: str, lines: Optional[Sequence[str]] = None) -> str:
    """'N <what>: a, b, c, ... (all N listed in <list_path>)', after writing `lines` (default: the
    names), one a line, to `list_path` (its folder is made). A short list is named whole and not written."""
    if len(names) <= SHOWN:
        return f"{len(names)} {what}: {', '.join(names)}"
    os.makedirs(os.path.dirname(os.path.abspath(list_path)), exist_ok=True)
    rows = names if lines is None else lines
    write_atomic(list_path, lambda f: f.writelines(f"{row}\n".encode() for row in rows))
    return f"{len(names)} {what}: {', '.join(names[:SHOWN])}, ... (all {len(names)} listed in {list_path})"


def write_atomic(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write` on a binary temporary file next to `path`, flush it to disk and rename it to
    `path`. The temporary name is hidden and names the host and process: on a shared file system
    every rank (every node's first rank) may write the same file at once, and a leftover from a
    kill is neither read as the file nor overwritten by another writer."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
