"""Learning-rate scaling and per-optimizer-step cosine schedules (lr with linear warmup, weight decay).

Schedules are pure functions of the global optimizer step, so a resumed run only needs the step
to be back on the same curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from video_mcmae.config import Config


@dataclass(frozen=True)
class CosineSchedule:
    """Linear ramp from `warmup_start` (step 0) to `base` (step `warmup_steps`), then a cosine
    from `base` to `final` reached at `total_steps`; constant afterwards."""

    base: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start + (self.base - self.warmup_start) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LrPlan:
    """The numbers behind the run's learning rate, printed once at start."""

    world_size: int
    batch_size: int
    accum_steps: int
    num_sample: int
    lr: float
    min_lr: float
    warmup_lr: float
    epochs: int

    @property
    def effective_batch(self) -> int:
        """Clips per optimizer step over all ranks."""
        return self.world_size * self.batch_size * self.accum_steps * self.num_sample

    @property
    def effective_epochs(self) -> int:
        """Passes of clips over the video list: each epoch draws `num_sample` clips per video."""
        return self.epochs * self.num_sample

    def describe(self, base_lr: float | None) -> str:
        how = (f"base_lr {base_lr:.3g} x {self.effective_batch}/256" if base_lr is not None
               else "optim.lr (absolute)")
        return (
            f"effective batch {self.effective_batch} clips/step = {self.world_size} ranks x "
            f"{self.batch_size} videos x {self.accum_steps} accum x {self.num_sample} num_sample; "
            f"lr {self.lr:.4g} ({how}), min_lr {self.min_lr:.4g}; "
            f"{self.epochs} epochs = {self.effective_epochs} effective epochs "
            f"(each video is seen {self.num_sample}x per epoch)"
        )


def lr_plan(cfg: Config, world_size: int) -> LrPlan:
    """lr = base_lr x effective global batch / 256 (min/warmup lr alike), unless `optim.lr` is set."""
    o, n = cfg.optim, cfg.data.num_sample
    scale = 1.0 if o.lr is not None else world_size * o.batch_size * o.accum_steps * n / 256
    lr = o.lr if o.lr is not None else o.base_lr * scale
    return LrPlan(world_size, o.batch_size, o.accum_steps, n, lr, o.min_lr * scale, o.warmup_lr * scale, o.epochs)


@dataclass(frozen=True)
class Schedules:
    lr: CosineSchedule
    wd: CosineSchedule

    def apply(self, optimizer, step: int) -> tuple[float, float]:
        """Set every param group's lr (x its `lr_scale`) and weight decay (x its `wd_scale`,
        0 for groups without decay); returns the unscaled (lr, wd)."""
        lr, wd = self.lr(step), self.wd(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["weight_decay"] = wd * group.get("wd_scale", 1.0)
        return lr, wd


def build_schedules(cfg: Config, plan: LrPlan, steps_per_epoch: int) -> Schedules:
    """Per-optimizer-step schedules for `optim.epochs` epochs of `steps_per_epoch` steps."""
    o = cfg.optim
    total = o.epochs * steps_per_epoch
    lr = CosineSchedule(plan.lr, plan.min_lr, total, round(o.warmup_epochs * steps_per_epoch), plan.warmup_lr)
    wd_end = o.weight_decay if o.weight_decay_end is None else o.weight_decay_end
    return Schedules(lr=lr, wd=CosineSchedule(o.weight_decay, wd_end, total))
