"""Finetuning a whole classifier on few labels, until its validation accuracy stops improving.

The recipe is the official finetuning one at toy scale (AdamW over layer-decayed parameter groups
with no weight decay on norms, biases and tables — `engine.optim.param_groups`; a linear warmup
then a per-step cosine — `engine.schedule`; label smoothing; drop path from the model), plus the
task's exact label symmetries as augmentation (`ClipSet.augment`). Validation runs every
`eval_every` steps; the state with the best validation accuracy is kept, and training stops after
`patience` validations without a new best or at `max_steps`. No function here sees a test split.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from video_mcmae.engine.optim import param_groups
from video_mcmae.engine.schedule import CosineSchedule, Schedules

from .data import ClipSet, predict_clips


@dataclass(frozen=True)
class FinetuneRecipe:
    lr: float = 1e-3
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    batch: int = 16
    warmup_steps: int = 50
    max_steps: int = 3000  # the cosine's length, and the most steps a run takes
    eval_every: int = 50
    patience: int = 8  # validations without a new best before stopping; 0: never stop early
    label_smoothing: float = 0.1
    augment: bool = True  # the task's label-preserving (or label-mapping) symmetries


@dataclass
class FinetuneResult:
    val_acc: float  # the best validation accuracy
    best_step: int  # the step whose weights were kept
    steps: int  # steps run (early stopping or max_steps)
    curve: List[tuple] = field(default_factory=list)  # (step, validation accuracy)
    state: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # the kept weights


def finetune(model: nn.Module, train: ClipSet, val: ClipSet, recipe: FinetuneRecipe, seed: int,
             on_eval: Callable[[int, float], None] = None) -> FinetuneResult:
    """Finetune `model` in place on `train`; return the validation record and the best weights
    (loaded back into `model` before returning)."""
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay, recipe.layer_decay), lr=recipe.lr)
    schedules = Schedules(lr=CosineSchedule(recipe.lr, 1e-6, recipe.max_steps, recipe.warmup_steps),
                          wd=CosineSchedule(recipe.weight_decay, recipe.weight_decay, recipe.max_steps))
    result = FinetuneResult(-1.0, 0, 0, state=copy.deepcopy(model.state_dict()))
    stale = 0
    model.train()
    for step in range(recipe.max_steps):
        schedules.apply(opt, step)
        x, y = train.batch(recipe.batch, order, augment=recipe.augment)
        loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.steps = step + 1
        if result.steps % recipe.eval_every and result.steps != recipe.max_steps:
            continue
        acc = float((predict_clips(model, val) == val.labels).float().mean())
        model.train()
        result.curve.append((result.steps, acc))
        if on_eval is not None:
            on_eval(result.steps, acc)
        if acc > result.val_acc:
            result.val_acc, result.best_step, stale = acc, result.steps, 0
            result.state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if recipe.patience and stale >= recipe.patience:
                break
    model.load_state_dict(result.state)
    model.eval()
    return result
