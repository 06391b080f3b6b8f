"""How the command-line tools end: a user error becomes one `error: ...` line and an exit status.

Exit status: 0 done; 2 a user-fixable error (config, path, data list, checkpoint, unreadable
training data; the message names the fix); 3 the training loss became NaN/inf.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple, Type

from video_mcmae.config import ConfigError
from video_mcmae.data.datasets import TooManyBadFilesError
from video_mcmae.data.lists import DataListError
from video_mcmae.engine import distributed
from video_mcmae.engine.trainer import NonFiniteLossError
from video_mcmae.weights import CheckpointError

USER_ERRORS: Tuple[Type[BaseException], ...] = (
    ConfigError, CheckpointError, DataListError, TooManyBadFilesError, FileNotFoundError,
)
NON_FINITE_LOSS_STATUS = 3


def run_cli(body: Callable[[], Any], rank_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run a tool's `body` and return its exit status; the process group is destroyed either way.

    `USER_ERRORS` and `NonFiniteLossError` happen on every rank alike, so only the main rank
    prints them. `rank_errors` are the caller's own user errors that one rank may raise alone
    (exit status 2): the rank that raised one prints it.
    """
    try:
        body()
    except USER_ERRORS + rank_errors as e:
        if distributed.is_main() or isinstance(e, rank_errors):
            print(f"error: {e}", flush=True)
        return 2
    except NonFiniteLossError as e:
        if distributed.is_main():
            print(f"error: {e}", flush=True)
        return NON_FINITE_LOSS_STATUS
    finally:
        distributed.destroy()
    return 0
