"""Training logs on rank 0: console lines with speed and ETA, `log.jsonl`, TensorBoard scalars.

Other ranks get a logger that only keeps the running averages (they are needed for nothing
but keep the calling code free of rank checks).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections import deque
from typing import Dict, Optional


class Meter:
    """Windowed and global average of a scalar."""

    def __init__(self, window: int = 20):
        self.recent = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.recent.append(value)
        self.total += value
        self.count += 1

    @property
    def avg(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan


_CURRENT = ("lr", "wd", "loss_scale")


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


class TrainLogger:
    def __init__(self, out_dir: str, enabled: bool, log_every: int, tensorboard: bool = True,
                 window: Optional[int] = None):
        self.enabled = enabled
        self.log_every = log_every
        self.window = window or max(20, log_every)
        self.meters: Dict[str, Meter] = {}
        self.jsonl = None
        self.tb = None
        if enabled:
            os.makedirs(out_dir, exist_ok=True)
            self.jsonl = open(os.path.join(out_dir, "log.jsonl"), "a", encoding="utf-8")
            if tensorboard:
                # Heavy import, needed only by runs that log to TensorBoard (run.tensorboard=true).
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=os.path.join(out_dir, "tensorboard"))

    def info(self, msg: str) -> None:
        if self.enabled:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"[{stamp}] {msg}", file=sys.stdout, flush=True)

    def start_epoch(self) -> None:
        self.meters = {}

    def _write(self, record: Dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def log_iter(self, epoch: int, it: int, iters_per_epoch: int, step: int, remaining_iters: int,
                 metrics: Dict[str, float]) -> None:
        """Record one iteration; every `log_every` iterations (and the epoch's last) print, write
        a JSON line and TensorBoard scalars. `remaining_iters` counts the whole run's rest."""
        for k, v in metrics.items():
            if v is not None:
                self.meters.setdefault(k, Meter(self.window)).update(float(v))
        if not self.enabled or not ((it + 1) % self.log_every == 0 or it + 1 == iters_per_epoch):
            return
        iter_time = self.meters["iter_time"].avg if "iter_time" in self.meters else math.nan
        # Scheduled values are shown as they are now; measured ones averaged over the window.
        shown = " ".join(f"{k} {_fmt(metrics[k] if k in _CURRENT else m.avg)}"
                         for k, m in self.meters.items() if k not in ("iter_time", "data_time") and k in metrics)
        self.info(
            f"epoch {epoch} [{it + 1}/{iters_per_epoch}] step {step} {shown} "
            f"| {1.0 / iter_time:.2f} it/s data {self.meters['data_time'].avg:.3f}s "
            f"| eta epoch {_eta(iter_time * (iters_per_epoch - it - 1))} run {_eta(iter_time * remaining_iters)}"
        )
        self._write({"type": "iter", "epoch": epoch, "iter": it + 1, "step": step, "time": time.time(),
                     **{k: v for k, v in metrics.items() if v is not None}})
        if self.tb is not None:
            for k, v in metrics.items():
                if v is not None:
                    self.tb.add_scalar(f"train/{k}", float(v), step)

    def log_epoch(self, epoch: int, step: int, metrics: Dict[str, float], prefix: str = "epoch") -> None:
        if not self.enabled:
            return
        self.info(f"{prefix} {epoch}: " + " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
        self._write({"type": prefix, "epoch": epoch, "step": step, "time": time.time(), **metrics})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{prefix}/{k}", float(v), epoch)
            self.tb.flush()

    def epoch_averages(self) -> Dict[str, float]:
        return {k: m.global_avg for k, m in self.meters.items()}

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
