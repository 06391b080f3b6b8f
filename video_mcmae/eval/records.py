"""Finished trainings of a protocol run, kept on disk so that a stopped run can go on.

The default protocol is hours of independent trainings (pretraining, probes, finetuning runs). Each
one's result — its validation record and the weights the later steps need, never a test number —
is written to `<folder>/<key>.pt` as soon as it ends; a run started again on the same folder loads
these instead of training again, so killing a run loses at most the trainings in flight. A
training is deterministic given its key and the configuration, so a resumed run selects and scores
exactly as one that was never stopped.

`<folder>/config.json` holds the configuration the records belong to; a run with another
configuration is refused while the folder holds records (they would answer another question).
The files are read with `weights_only=True`: a record cannot run code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from typing import Any, Dict, Optional

import torch

from video_mcmae.errors import CheckpointError, ConfigError
from video_mcmae.paths import write_atomic

CONFIG_FILE = "config.json"
# Settings that change how a run is executed, not what it computes.
EXECUTION_ONLY = ("workers",)
_KEY = re.compile(r"^[A-Za-z0-9_.=-]+$")


def fingerprint(cfg: Any) -> Dict[str, Any]:
    """The configuration as JSON-compatible data, without the execution-only settings."""
    data = json.loads(json.dumps(dataclasses.asdict(cfg), default=repr))
    return {k: v for k, v in data.items() if k not in EXECUTION_ONLY}


def _with_defaults(held: Any, default: Any) -> Any:
    """`held` with every key it lacks taken from `default`, at any depth: a setting added to the
    configuration after a run started did not exist then, which is what its default computes."""
    if not (isinstance(held, dict) and isinstance(default, dict)):
        return held
    return {**default, **{k: _with_defaults(v, default.get(k)) for k, v in held.items()}}


class Records:
    """`get(key)` a finished training's result (None if not finished), `put(key, result)` one."""

    def __init__(self, folder: Optional[str], cfg: Any):
        self.folder = folder
        self.loaded = 0
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CONFIG_FILE)
        wanted = fingerprint(cfg)
        if len(self) and os.path.exists(path):
            with open(path) as f:
                held = _with_defaults(json.load(f), fingerprint(type(cfg)()))
            if held != wanted:
                differ = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
                raise ConfigError(
                    f"{folder} holds the trainings of another configuration (differs in: {', '.join(differ)}): "
                    "give the same settings to go on with that run, or choose another output folder")
        else:
            write_atomic(path, lambda f: f.write(json.dumps(wanted, indent=1, sort_keys=True).encode()))

    def __len__(self) -> int:
        return finished(self.folder)

    def _path(self, key: str) -> str:
        if not _KEY.match(key):
            raise ValueError(f"record key {key!r}: letters, digits and _.=- only")
        return os.path.join(self.folder, key + ".pt")

    def get(self, key: str) -> Optional[dict]:
        if self.folder is None:
            return None
        path = self._path(key)
        if not os.path.exists(path):
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as e:
            raise CheckpointError(
                f"cannot read the training record {path} ({str(e).strip().splitlines()[0]}): it was not "
                "written by this protocol or is damaged; remove it (that training runs again)") from None
        self.loaded += 1
        return record

    def put(self, key: str, result: dict) -> None:
        if self.folder is not None:
            write_atomic(self._path(key), lambda f: torch.save(result, f))


def finished(folder: Optional[str]) -> int:
    """How many finished trainings `folder` holds (0 when there is no such folder)."""
    if folder is None or not os.path.isdir(folder):
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith(".pt"))

