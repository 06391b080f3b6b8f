"""The errors a user can cause and fix, and how a run can end badly: one home for the types, so that
every layer raises them and the command-line layer (`video_mcmae.cli`) catches them without
importing the layers. Imports nothing of the package.

Each message names the thing (a config key, a path, a list line, a file) and the fix; the tools
print it as one `error:` line and exit with status 2 (`NonFiniteLossError`: status 3).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A user-fixable problem in a config file or override."""


class CheckpointError(ValueError):
    """A checkpoint path or file that cannot be used as asked (message says why and what to do)."""


class DataListError(ValueError):
    """A data list or class-name file that cannot be used as written."""


class VideoReadError(Exception):
    """A video file that cannot be read; names the file and the reason."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path!r}: {reason}")

    def __reduce__(self):
        # Keeps (path, reason) intact when raised inside DataLoader / multiprocessing workers.
        return (VideoReadError, (self.path, self.reason))


class TooManyBadFilesError(RuntimeError):
    """More of the training list is unreadable than `data.max_bad_fraction` allows."""


class ApiError(ValueError):
    """Something the caller of `video_mcmae.api` asked for that cannot work; the message says what to change."""


class OutputError(ValueError):
    """An output location that cannot be written (checked before the work starts, `paths.check_writable`)."""


class MultiViewError(ValueError):
    """Shards or views that cannot be merged into a complete, consistent result."""


class FolderInUseError(RuntimeError):
    """An output folder another run holds (`run_lock`): the message names the holder."""


class FolderNotSharedError(RuntimeError):
    """A run's output folder that its ranks on other nodes do not see (no shared file system)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf on some rank; the run stops before the optimizer step."""
