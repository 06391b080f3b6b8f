"""Masked-autoencoder pretraining: the step (masked clips -> reconstruction loss, logged next to the
trivial baselines of `models.baselines`) and the run.

The loop, checkpoints and resume are shared with finetuning in `trainer.py`.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch

from video_mcmae.config import Config
from video_mcmae.data.device import to_model_input
from video_mcmae.engine.deepspeed_config import input_dtype
from video_mcmae.engine.trainer import Run, StepFn, fit, make_engine, resume_engine, start_run, train_loader
from video_mcmae.errors import ConfigError
from video_mcmae.models import build_model, is_pretraining


def pretrain_step(mean: Sequence[float], std: Sequence[float]) -> StepFn:
    """The training step for clips normalised with `mean`/`std` (config data.mean/std) on the device:
    -> (loss, the trivial baselines of this batch and masks, and the loss over the best of them).
    The masks are drawn here, as the model would draw them, so the baselines score the same cubes."""

    def step(engine, batch, generator: torch.Generator) -> Tuple[torch.Tensor, Dict[str, float]]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = to_model_input(x, engine.device, mean, std, input_dtype(engine))
        model = engine.module
        mask = model.draw_mask(x, generator)
        decoder_mask = model.draw_decoder_mask(mask, generator)
        loss, _, mask = engine(x, mask=mask, decoder_mask=decoder_mask)
        baselines = model.trivial_baselines(x, mask, decoder_mask)
        best = min(baselines.values())
        return loss, {**baselines, "loss_vs_best_baseline": loss.item() / best if best > 0 else math.nan}

    return step


def run_pretrain(cfg: Config, resume: str = "", auto_resume: bool = False) -> Run:
    if not is_pretraining(cfg.model.name):
        raise ConfigError(f"model.name={cfg.model.name!r} is a classifier; pretraining needs a *convmae* preset")
    run = start_run(cfg, resume, auto_resume)
    try:
        _, loader, steps = train_loader(run, "pretrain")  # data errors surface before the engine starts
        engine, optimizer, names = make_engine(run, build_model(cfg.model, data=cfg.data))
        resume_engine(run, engine)
        fit(run, engine, optimizer, names, loader, steps, pretrain_step(cfg.data.mean, cfg.data.std))
        run.logger.info(f"done: {run.epoch} epochs, global step {run.global_step}")
    finally:
        run.close()
    return run

