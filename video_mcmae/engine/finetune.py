"""Supervised finetuning, linear probing and single-view validation of the classifiers.

Validation takes the deterministic single view of every readable video exactly once (ranks get
disjoint shards, no sampler padding), so accuracies do not depend on the number of ranks. The
multi-view test lives in `engine/multiview/`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader

from video_mcmae import run_folder
from video_mcmae.config import Config
from video_mcmae.data.factory import build_dataset
from video_mcmae.data.loader import Loader
from video_mcmae.data.device import ClipErasing, StepSeeds, build_erasing, to_model_input
from video_mcmae.data.samplers import StridedShardSampler
from video_mcmae.data.transforms import VideoMixup, build_mixup
from video_mcmae.engine import checkpoint as ckpt
from video_mcmae.engine import distributed
from video_mcmae.engine.deepspeed_config import input_dtype
from video_mcmae.engine.trainer import (
    Run, StepFn, client_state, fit, make_engine, resume_engine, start_run, train_loader,
)
from video_mcmae.errors import CheckpointError, ConfigError, DataListError
from video_mcmae.models import build_model, is_pretraining, load_pretrained
from video_mcmae.weights import Weights, read_weights


def val_loader(cfg: Config, rank: int, world_size: int) -> Loader:
    """The validation set's loader; a set without a readable video is refused (every rank alike)."""
    dataset = build_dataset(cfg, "val")
    if len(dataset) == 0:
        raise DataListError(
            f"the validation list {cfg.data.val_list} has no readable video (all {len(dataset.samples)} are "
            "unreadable, each logged above with its reason): validation would measure nothing. Fix the "
            "files, or give data.val_list a list with readable videos (tools/check_data_list.py writes one)")
    sampler = StridedShardSampler(dataset, rank, world_size)
    return Loader(dataset, batch_size=cfg.test.batch_size, sampler=sampler,
                  num_workers=cfg.data.num_workers, pin_memory=cfg.data.pin_memory and torch.cuda.is_available())


@torch.no_grad()
def evaluate(engine, loader: DataLoader, topk: List[int], num_classes: int, mean: Sequence[float],
             std: Sequence[float]) -> Dict[str, float]:
    """Loss and top-k accuracy (%) over the whole validation set (clips normalised with `mean`/`std`
    on the device), summed over ranks."""
    engine.eval()
    ks = sorted({min(k, num_classes) for k in topk})
    sums = torch.zeros(2 + len(ks), dtype=torch.float64, device=engine.device)  # loss, count, hits per k
    for x, y in loader:
        x = to_model_input(x, engine.device, mean, std, input_dtype(engine))
        y = y.to(engine.device, non_blocking=True)
        logits = engine(x).float()
        sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
        sums[1] += y.numel()
        top = logits.topk(ks[-1], dim=1).indices
        for i, k in enumerate(ks):
            sums[2 + i] += (top[:, :k] == y[:, None]).any(dim=1).sum()
    distributed.all_reduce_sum(sums)
    n = max(sums[1].item(), 1.0)
    out = {"loss": sums[0].item() / n, "num_videos": sums[1].item()}
    out.update({f"acc{k}": 100.0 * sums[2 + i].item() / n for i, k in enumerate(ks)})
    return out


def _misfit(path: str, weights: Weights, model: nn.Module, cfg: Config, error: ValueError) -> CheckpointError:
    """`--finetune` weights that `load_pretrained` refused, said in terms of the config."""
    target = model.state_dict()
    differ = [k for k, v in weights.state_dict.items() if k in target and v.shape != target[k].shape]
    saved_as = f" (saved as {weights.preset})" if weights.preset else ""
    if differ and all(k.startswith("head.") for k in differ):
        head = weights.state_dict.get("head.weight")
        classes = f"{head.shape[0]} classes" if head is not None and head.dim() == 2 else "another head"
        return CheckpointError(
            f"--finetune {path}{saved_as} has a classifier head for {classes} but model.num_classes="
            f"{cfg.model.num_classes}: set --opt model.num_classes to the checkpoint's, or finetune from "
            "the pretraining weights (the head is then new)")
    if differ:
        k = differ[0]
        why = (f"{len(differ)} tensors differ in shape, e.g. '{k}': checkpoint {tuple(weights.state_dict[k].shape)} "
               f"vs model {tuple(target[k].shape)}")
    else:
        why = str(error)
    return CheckpointError(
        f"--finetune {path}{saved_as} does not fit model.name={cfg.model.name} ({why}): give weights of "
        "this preset, or set model.name (and its shapes) to the preset the weights were trained as")


def load_initial_weights(model: nn.Module, path: str, cfg: Config, logger) -> None:
    """`--finetune`: a pretraining (or finetuning) DeepSpeed checkpoint, exported weights or a
    weights-only .pth; the models' `load_pretrained` filters keys and resizes position tables."""
    try:
        weights = read_weights(path)
    except FileNotFoundError:
        raise CheckpointError(f"--finetune {path!r} not found; give a checkpoint folder, .safetensors or .pth") from None
    try:
        report = load_pretrained(model, weights.state_dict)
    except ValueError as e:
        raise _misfit(path, weights, model, cfg, e) from None
    logger.info(f"loaded initial weights from {path}:\n{report}")


def _criterion(cfg: Config, mixup: Optional[VideoMixup]) -> nn.Module:
    if mixup is not None:  # targets come back soft (and smoothed) from mixup
        return SoftTargetCrossEntropy()
    if cfg.aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.aug.smoothing)
    return nn.CrossEntropyLoss()


def finetune_step(mixup: Optional[VideoMixup], criterion: nn.Module, mean: Sequence[float], std: Sequence[float],
                  erasing: Optional[ClipErasing] = None) -> StepFn:
    """The training step: clips normalised with `mean`/`std` on the device, erased by `erasing`
    (seeded by `StepSeeds` from the step's generator) and mixed with their labels by `mixup` when
    on -> classifier loss. Mixup and the loss run in float32, the model in the engine's dtype."""
    seeds = StepSeeds()

    def step(engine, batch, generator: torch.Generator) -> torch.Tensor:
        x, y = batch
        x, y = to_model_input(x, engine.device, mean, std), y.to(engine.device, non_blocking=True)
        if erasing is not None:
            x = erasing(x, seeds(generator))
        if mixup is not None:
            x, y = mixup(x, y)
        return criterion(engine(x.to(input_dtype(engine))).float(), y)

    return step


class Validation:
    """`fit`'s after-epoch hook: validates every `run.eval_every` epochs and after the last one,
    saves the best top-1 as the `best` checkpoint, and returns the client state of epoch checkpoints."""

    def __init__(self, engine, loader: DataLoader, names: List[List[str]], linprobe: bool, best: float):
        self.engine, self.loader, self.names, self.linprobe = engine, loader, names, linprobe
        self.best = best
        self.last: Dict[str, float] = {}

    def __call__(self, run: Run) -> Dict[str, Any]:
        cfg = run.cfg
        if run.epoch % cfg.run.eval_every and run.epoch != cfg.optim.epochs:
            return {"best_acc1": self.best, "linprobe": self.linprobe}
        self.last = evaluate(self.engine, self.loader, cfg.test.topk, cfg.model.num_classes,
                             cfg.data.mean, cfg.data.std)
        improved = self.last["acc1"] > self.best
        self.best = max(self.best, self.last["acc1"])
        run.logger.log_epoch(run.epoch, run.global_step, {**self.last, "best_acc1": self.best}, prefix="val")
        if improved:
            extra = {"best_acc1": self.best, "val": self.last, "linprobe": self.linprobe}
            path = ckpt.save_checkpoint(self.engine, run.out_dir, run_folder.BEST,
                                        client_state(run, self.names, **extra), mark_latest=False)
            run.logger.info(f"new best acc1 {self.best:.2f}: saved {path}")
        return {"best_acc1": self.best, "linprobe": self.linprobe}


def run_finetune(cfg: Config, finetune: str = "", resume: str = "", auto_resume: bool = False,
                 linprobe: bool = False, eval_only: bool = False) -> Dict[str, float]:
    """Train (or with `eval_only` only validate) a classifier; returns the last validation metrics."""
    if is_pretraining(cfg.model.name):
        raise ConfigError(f"model.name={cfg.model.name!r} is a pretraining model; finetuning needs a classifier preset")
    if eval_only and not (finetune or resume):
        raise ConfigError("--eval needs weights: pass --resume CHECKPOINT or --finetune WEIGHTS")
    run = start_run(cfg, "" if eval_only else resume, auto_resume, eval_only=eval_only, linprobe=linprobe)
    try:
        val = val_loader(cfg, run.info.rank, run.info.world_size)  # data errors surface before the engine starts
        if not eval_only:
            _, loader, steps = train_loader(run, "train")
        model = build_model(cfg.model, linprobe=linprobe)
        if finetune and run.resume_path is None:
            load_initial_weights(model, finetune, cfg, run.logger)
        if linprobe:  # train only the head (BatchNorm + linear) on the frozen encoder
            for name, p in model.named_parameters():
                p.requires_grad = name.startswith("head.")
        engine, optimizer, names = make_engine(run, model)
        if eval_only:
            if resume:
                ckpt.load_checkpoint(engine, resume, module_only=True)
            metrics = evaluate(engine, val, cfg.test.topk, cfg.model.num_classes, cfg.data.mean, cfg.data.std)
            run.logger.log_epoch(0, 0, metrics, prefix="val")
            return metrics
        resume_engine(run, engine)
        mixup = build_mixup(cfg.aug, cfg.model.num_classes)
        validation = Validation(engine, val, names, linprobe, float(run.client.get("best_acc1", float("-inf"))))
        step = finetune_step(mixup, _criterion(cfg, mixup), cfg.data.mean, cfg.data.std,
                             build_erasing(cfg.aug, cfg.data.dataset))
        fit(run, engine, optimizer, names, loader, steps, step, validation)
        run.logger.info(f"done: {run.epoch} epochs, best acc1 {validation.best:.2f}")
        return validation.last
    finally:
        run.close()

