import math

import pytest
import torch

from video_mcmae.config import load_config
from video_mcmae.engine.schedule import CosineSchedule, build_schedules, lr_plan


def test_cosine_with_warmup_values():
    s = CosineSchedule(base=1.0, final=0.1, total_steps=110, warmup_steps=10, warmup_start=0.0)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)  # linear ramp
    assert s(10) == pytest.approx(1.0)  # warmup ends at the base value
    assert s(60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))  # half-way: mean of ends
    assert s(35) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.25)))
    assert s(110) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.1)  # constant after the end
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup


def test_lr_scales_with_every_batch_factor():
    cfg = load_config(None, ["optim.batch_size=8", "optim.accum_steps=4", "data.num_sample=2",
                             "optim.base_lr=1e-3", "optim.min_lr=1e-5", "optim.epochs=10", "optim.warmup_epochs=1"])
    plan = lr_plan(cfg, world_size=4)
    assert plan.effective_batch == 4 * 8 * 4 * 2 == 256
    assert plan.lr == pytest.approx(1e-3)
    assert plan.min_lr == pytest.approx(1e-5)
    assert plan.effective_epochs == 20
    text = plan.describe(cfg.optim.base_lr)
    assert "effective batch 256" in text and "20 effective epochs" in text and "2x per epoch" in text
    half = lr_plan(cfg, world_size=2)
    assert half.lr == pytest.approx(0.5e-3) and half.min_lr == pytest.approx(0.5e-5)
    absolute = lr_plan(load_config(None, ["optim.lr=3e-4", "optim.min_lr=1e-6"]), world_size=64)
    assert absolute.lr == pytest.approx(3e-4) and absolute.min_lr == pytest.approx(1e-6)


def test_schedules_apply_per_group_scales_and_wd_only_where_decayed():
    cfg = load_config(None, ["optim.lr=1.0", "optim.min_lr=0.0", "optim.epochs=4", "optim.warmup_epochs=1",
                             "optim.weight_decay=0.1", "optim.weight_decay_end=0.3"])
    sched = build_schedules(cfg, lr_plan(cfg, 1), steps_per_epoch=5)
    assert (sched.lr.total_steps, sched.lr.warmup_steps) == (20, 5)
    p = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    opt = torch.optim.AdamW([
        {"params": [p[0]], "lr_scale": 0.5, "wd_scale": 1.0},
        {"params": [p[1]], "lr_scale": 1.0, "wd_scale": 0.0},
    ])
    lr, wd = sched.apply(opt, 3)
    assert lr == pytest.approx(0.6) and wd == pytest.approx(0.1 + 0.1 * (1 - math.cos(math.pi * 3 / 20)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.6)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(wd)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert sched.wd(20) == pytest.approx(0.3)
    constant = build_schedules(load_config(None, ["optim.weight_decay=0.05"]), lr_plan(load_config(None), 1), 3)
    assert constant.wd(0) == constant.wd(1000) == pytest.approx(0.05)
