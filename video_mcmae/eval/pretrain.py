"""Masked-autoencoder pretraining in one process (plain PyTorch, no DeepSpeed), for the evaluation.

The model's own masks and loss (`forward(x, generator=...)`), AdamW with betas (0.9, 0.95) over
`engine.optim.param_groups` (no weight decay on norms, biases, tables and the mask token), a
linear warmup then a per-step cosine to 1% of the lr (`engine.schedule`). The unlabelled clips
may be mirrored and reversed in time at random: the pretext needs no label to survive that. Every
`eval_every` steps the loss on fixed validation clips and masks is recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import torch
from torch import nn

from video_mcmae.engine.optim import param_groups
from video_mcmae.engine.schedule import CosineSchedule, Schedules

from .data import ClipSet, chunks, to_input


@dataclass(frozen=True)
class PretrainRecipe:
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch: int = 16
    warmup: float = 0.05  # fraction of the steps
    eval_every: int = 200
    augment: bool = True


@dataclass
class PretrainResult:
    curve: List[Tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    seconds: float = 0.0


@torch.no_grad()
def masked_loss(model: nn.Module, clips: ClipSet, mask: torch.Tensor, batch: int = 64) -> float:
    """The model's own loss on `clips` with the fixed `mask` (mean over clips)."""
    was_training = model.training
    model.eval()
    total = sum(float(model(to_input(clips.clips[b]), mask=mask[b])[0]) * (b.stop - b.start)
                for b in chunks(len(clips), batch))
    model.train(was_training)
    return total / len(clips)


def fixed_mask(model: nn.Module, clips: ClipSet, seed: int) -> torch.Tensor:
    """The model's masks for `clips`, drawn once from `seed` (the same for every model of this
    pretext, so losses of different runs compare)."""
    return model.draw_mask(to_input(clips.clips[:1]).expand(len(clips), -1, -1, -1, -1),
                           torch.Generator().manual_seed(seed))


def pretrain(model: nn.Module, pool: ClipSet, recipe: PretrainRecipe, seed: int, val: ClipSet,
             val_mask: torch.Tensor, on_eval: Callable[[int, float], None] = None) -> PretrainResult:
    """Pretrain `model` in place on the unlabelled `pool` (its labels are never read)."""
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed + 1)  # batches, augmentation and masks
    opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.95))
    schedules = Schedules(lr=CosineSchedule(recipe.lr, recipe.lr * 0.01, recipe.steps,
                                            round(recipe.warmup * recipe.steps)),
                          wd=CosineSchedule(recipe.weight_decay, recipe.weight_decay, recipe.steps))
    result = PretrainResult(curve=[(0, masked_loss(model, val, val_mask))])
    started = time.perf_counter()
    model.train()
    for step in range(1, recipe.steps + 1):
        schedules.apply(opt, step - 1)
        index = torch.randint(len(pool), (recipe.batch,), generator=draws)
        x = to_input(pool.clips[index])
        if recipe.augment:
            flip = torch.rand(recipe.batch, generator=draws) < 0.5
            reverse = torch.rand(recipe.batch, generator=draws) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)
            x = torch.where(reverse.view(-1, 1, 1, 1, 1), x.flip(2), x)
        loss = model(x, generator=draws)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % recipe.eval_every == 0 or step == recipe.steps:
            result.curve.append((step, masked_loss(model, val, val_mask)))
            if on_eval is not None:
                on_eval(step, result.curve[-1][1])
    result.seconds = time.perf_counter() - started
    return result
