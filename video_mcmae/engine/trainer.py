"""The training loop and run set-up shared by pretraining (`pretrain.py`) and finetuning (`finetune.py`).

A run: `start_run` (process group, resume decision, logs, saved config) -> `train_loader` ->
`make_engine` (optimizer + DeepSpeed) -> `resume_engine` -> `fit`, which calls `train_one_epoch`
with the caller's step function and saves checkpoints at epoch boundaries.

Reproducibility: every epoch starts from seeds derived from (run.seed, epoch, rank): the
sampler order, the per-item augmentations (the datasets seed each item by (seed, epoch, index)),
the masks (a generator handed to the model) and dropout/drop-path (the global RNGs). Checkpoints
are taken at epoch boundaries, so a run resumed from one repeats the following epochs exactly
as an uninterrupted run would.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from video_mcmae import run_folder
from video_mcmae.run_lock import FolderLock, hold_run_folder
from video_mcmae.config import Config, config_diff, recorded_config, save_config
from video_mcmae.data.factory import build_dataset, build_loader
from video_mcmae.data.loader import set_epoch
from video_mcmae.engine import checkpoint as ckpt
from video_mcmae.engine import distributed
from video_mcmae.engine.deepspeed_config import initialize_engine, input_dtype
from video_mcmae.engine.logging import TrainLogger
from video_mcmae.engine.optim import build_optimizer
from video_mcmae.engine.schedule import Schedules, build_schedules, lr_plan
from video_mcmae.models import is_pretraining
from video_mcmae.errors import CheckpointError, ConfigError, NonFiniteLossError, TooManyBadFilesError
from video_mcmae.paths import check_writable
from video_mcmae.weights import read_model_states


# A training step: (engine, batch, mask generator) -> loss, or (loss, {name: float}) to log next to
# the loss (step lines, the epoch's averages, TensorBoard).
StepFn = Callable[[Any, Any, torch.Generator], Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, float]]]]


@dataclass
class Run:
    """What every part of a run needs: config, ranks, logger, and where it resumes from."""

    cfg: Config
    info: distributed.DistInfo
    logger: TrainLogger
    resume_path: Optional[str]
    epoch: int = 0  # completed epochs
    global_step: int = 0  # completed optimizer steps
    client: Dict[str, Any] = field(default_factory=dict)  # client state of the resumed checkpoint
    train_samples: Optional[int] = None  # samples in the train list (set by train_loader)
    lock: Optional[FolderLock] = None  # rank 0's lock on the output dir (`run_lock`)

    @property
    def out_dir(self) -> str:
        return self.cfg.run.output_dir

    def close(self) -> None:
        """Close the logs, then let go of the output dir."""
        self.logger.close()
        if self.lock is not None:
            self.lock.release()


# What a resume cannot change: the model and its input shapes (the saved weights' shapes), and
# the per-epoch step layout. The lr/wd schedules are functions of the global optimizer step over
# epochs of a fixed number of steps, so the batch, accumulation, step cap and ranks must stay; and
# DeepSpeed keeps the optimizer state in the layout of its ZeRO stage (partitioned by rank under
# ZeRO; DeepSpeed 0.19 refuses another world size and does not convert between stages).
# `model.num_classes` counts for classifiers only; `ranks` and `task` are not config keys.
RESUME_FIXED = ("model.name", "model.num_frames", "model.img_size", "model.tubelet_size", "model.num_classes",
                "model.kwargs", "optim.batch_size", "optim.accum_steps", "optim.steps_per_epoch",
                "deepspeed.zero_stage", "ranks", "task")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _fixed_on_resume(key: str, cfg: Config) -> bool:
    if key == "model.num_classes":
        return not is_pretraining(cfg.model.name)
    if key == "deepspeed.precision":
        # Under ZeRO-2 every precision uses the same DeepSpeed optimizer and checkpoint layout;
        # under ZeRO-1 and without ZeRO the precision picks another optimizer wrapper.
        return cfg.deepspeed.zero_stage != 2
    return key in RESUME_FIXED


def check_resume(path: str, cfg: Config, world_size: int, linprobe: bool = False) -> Dict[str, Tuple[Any, Any]]:
    """Compare the run recorded in checkpoint `path` with the one asked for, before anything is
    written. Refuses (naming the keys) what a resume cannot change, and a train list whose sample
    count differs from the checkpoint's unless `run.accept_train_list_change`; returns the other
    changes (lr, epochs, warmup, weight decay, ...) as key -> (checkpoint's, this run's)."""
    load_dir, tag = run_folder.resolve_checkpoint(path)
    states = read_model_states(os.path.join(load_dir, tag), mmap=True)
    changed = config_diff(recorded_config(states.get("config") or {}), cfg.to_dict())
    ranks = (states.get("sampler") or {}).get("world_size", states.get("dp_world_size"))
    if ranks is not None and ranks != world_size:
        changed["ranks"] = (ranks, world_size)
    if "linprobe" in states and bool(states["linprobe"]) != linprobe:
        changed["task"] = tuple("linear probe" if lp else "finetuning" for lp in (bool(states["linprobe"]), linprobe))
    fixed = [k for k in changed if _fixed_on_resume(k, cfg)]
    if fixed:
        original = os.path.join(load_dir, run_folder.CONFIG_FILE)
        raise CheckpointError(
            f"cannot resume {path}: the checkpoint was made with "
            f"{', '.join(f'{k}={_show(changed[k][0])}' for k in fixed)}; this run asks for "
            f"{', '.join(f'{k}={_show(changed[k][1])}' for k in fixed)}; use the original config"
            f"{f' ({original})' if os.path.isfile(original) else ''} or start a new --output_dir")
    if "train_samples" in states:  # checkpoints made before it was recorded are not compared
        # The list sets the steps per epoch, which the lr/wd schedules and the data order follow.
        before = states["train_samples"]
        samples = len(build_dataset(cfg, "pretrain" if is_pretraining(cfg.model.name) else "train"))
        if samples != before and not cfg.run.accept_train_list_change:
            raise CheckpointError(
                f"cannot resume {path}: its run trained on {before} samples and the train list "
                f"{cfg.data.train_list} now holds {samples}; restore the list, start a new --output_dir, or "
                "pass --opt run.accept_train_list_change=true to go on with this list (the steps per "
                "epoch, and with them the schedule, change)")
        if samples != before:
            changed["train samples"] = (before, samples)
    return changed


def start_run(cfg: Config, resume: str = "", auto_resume: bool = False, eval_only: bool = False,
              linprobe: bool = False) -> Run:
    """Join the process group, decide where to resume from (checking the checkpoint's config
    before anything is written), open the logs, save the config."""
    distributed.set_deterministic(cfg.run.deterministic)
    info = distributed.init(cfg.run.device)
    out = cfg.run.output_dir
    check_writable(out, "run.output_dir (--output_dir)")
    # Before anything in the dir is read or written: another run there would mix its files with ours.
    lock = hold_run_folder(out)
    try:
        return _start(cfg, info, lock, resume, auto_resume, eval_only, linprobe)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _start(cfg: Config, info: distributed.DistInfo, lock: Optional[FolderLock], resume: str, auto_resume: bool,
           eval_only: bool, linprobe: bool) -> Run:
    out = cfg.run.output_dir
    path = resume or None
    if path is None and auto_resume and not eval_only:
        path = run_folder.find_auto_resume(out)
    changes: Dict[str, Tuple[Any, Any]] = {}
    if path is not None:
        # also fails now, before any work, on a bad path
        run_folder.ensure_no_newer_checkpoints(out, ckpt.checkpoint_epoch(path))
        ckpt.check_checkpoint(path)  # plain weights only: nothing in it runs as code
        changes = check_resume(path, cfg, info.world_size, linprobe)
    elif not eval_only:
        run_folder.ensure_fresh_output(out)
    distributed.barrier()  # every rank has looked at the output dir before rank 0 writes to it
    logger = TrainLogger(out, info.is_main, cfg.run.log_every, cfg.run.tensorboard and not eval_only)
    if lock is not None and lock.taken_over:
        logger.info(lock.takeover_note())
    for partial in [] if eval_only else run_folder.partial_checkpoints(out):
        logger.info(f"ignoring {partial}: a checkpoint save that did not finish (killed, or out of disk "
                    "space); it is not resumed from and can be deleted")
    saved = save_config(cfg, out, run_folder.config_file(out, path is not None, eval_only)) if info.is_main else None
    distributed.seed_all(distributed.derived_seed(cfg.run.seed, info.rank))
    logger.info(f"ranks {info.world_size}, device {info.device}, output {os.path.abspath(out)}"
                + (f", resuming {path}" if path else "") + (f"; config saved as {saved}" if saved else ""))
    if changes:
        logger.info("changed since the checkpoint: "
                    + ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items()))
    return Run(cfg, info, logger, path, lock=lock)


def param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> List[List[str]]:
    """Names of the optimizer's parameters, group by group (read before DeepSpeed flattens them);
    saved with checkpoints so exports can name fp32 master weights."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]


def make_engine(run: Run, model: nn.Module):
    """-> (engine, the torch optimizer the schedules drive, its parameter names)."""
    model.to(run.info.device)
    optimizer = build_optimizer(model, run.cfg, run.info.device)
    names = param_names(model, optimizer)
    engine = initialize_engine(model, optimizer, run.cfg, run.info)
    if run.cfg.model.compile:
        engine.compile()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.logger.info(f"model {run.cfg.model.name}: {n_train:,} trainable parameters in "
                    f"{len(optimizer.param_groups)} groups; ZeRO {engine.zero_optimization_stage()}, "
                    f"{str(input_dtype(engine)).replace('torch.', '')}")
    return engine, optimizer, names


def resume_engine(run: Run, engine) -> None:
    """Load the resume checkpoint (weights, optimizer, loss scale) and the loop position."""
    if run.resume_path is None:
        return
    client = ckpt.load_checkpoint(engine, run.resume_path)  # start_run has checked its config
    run.client, run.epoch, run.global_step = client, int(client.get("epoch", 0)), int(client.get("global_step", 0))
    sampler = client.get("sampler") or {}
    if sampler and (sampler.get("world_size"), sampler.get("seed")) != (run.info.world_size, run.cfg.run.seed):
        run.logger.info(f"note: checkpoint was written with {sampler.get('world_size')} ranks and seed "
                        f"{sampler.get('seed')}; the data order from here on differs from that run's")
    run.logger.info(f"resumed {run.resume_path}: epoch {run.epoch}, global step {run.global_step}")


def train_loader(run: Run, split: str):
    """(dataset, loader, optimizer steps per epoch); iterations per epoch = steps x accum_steps."""
    cfg = run.cfg
    dataset = build_dataset(cfg, split)
    run.train_samples = len(dataset)
    loader = build_loader(cfg, split, dataset, run.info.rank, run.info.world_size)
    steps = len(loader) // cfg.optim.accum_steps
    if cfg.optim.steps_per_epoch is not None:
        steps = min(steps, cfg.optim.steps_per_epoch)
    if steps == 0:
        raise ConfigError(
            f"the {split} list gives {len(loader)} batches of {cfg.optim.batch_size} per rank on "
            f"{run.info.world_size} ranks, fewer than optim.accum_steps={cfg.optim.accum_steps}; "
            "use a smaller optim.batch_size / accum_steps or fewer ranks"
        )
    return dataset, loader, steps


def _param_grad_norm(module: nn.Module) -> float:
    grads = [p.grad.float() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


class _BadFiles:
    """The training set's unreadable files over all ranks. Each process marks the files it could
    not read (in memory its loader workers share) and stops on its own marks alone; the ranks
    combine their marks whenever one of them found a new file or stopped, so the count and
    `data.max_bad_fraction` apply to the distinct files of all ranks, and every rank stops at the
    same iteration with the same message."""

    def __init__(self, dataset, device: torch.device):
        self.dataset, self.device = dataset, device
        self.combined_at = 0  # the ranks' summed mark counts when they last combined their marks

    def local_count(self) -> int:
        return int(self.dataset.bad_file_mask().sum())

    def combined_mask(self) -> torch.Tensor:
        return distributed.all_reduce_sum(self.dataset.bad_file_mask().to(self.device, torch.int32)) > 0

    def check(self, stopped: bool, marks: int) -> None:
        """On every rank after an iteration's all-reduce: `stopped` (some rank stopped on its own
        marks), `marks` (the ranks' mark counts summed). A rank stops only when its marks are over
        the limit, so the combined marks are then too."""
        if not stopped and marks == self.combined_at:
            return
        self.combined_at = marks
        error = self.dataset.too_many_bad_files(self.combined_mask())
        if error is not None:
            raise error

    def epoch_stats(self) -> Dict[str, int]:
        """Distinct unreadable files found by any rank so far; replacements of all ranks this epoch."""
        mask = self.combined_mask()
        error = self.dataset.too_many_bad_files(mask)
        if error is not None:
            raise error
        replaced = torch.tensor([self.dataset.bad_file_stats()["replaced"]], device=self.device)
        return {"bad_files": int(mask.sum()), "replaced": int(distributed.all_reduce_sum(replaced).item())}


def train_one_epoch(run: Run, engine, optimizer, loader, schedules: Schedules, steps: int,
                    step_fn: StepFn, generator: torch.Generator) -> Dict[str, float]:
    cfg, logger, device = run.cfg, run.logger, run.info.device
    accum = cfg.optim.accum_steps
    iters = steps * accum
    remaining_after = (cfg.optim.epochs - run.epoch - 1) * iters
    # DeepSpeed reports the global grad norm for ZeRO and half precision; plain fp32 we measure.
    own_norm = not (engine.zero_optimization() or engine.bfloat16_enabled() or engine.fp16_enabled())
    dataset = getattr(loader, "dataset", None)
    bad_files = _BadFiles(dataset, device) if hasattr(dataset, "too_many_bad_files") else None
    engine.train()
    logger.start_epoch()
    batches = iter(loader)
    end = time.time()
    for it in range(iters):
        try:
            batch, stopped = next(batches), False
        except TooManyBadFilesError:  # this rank's own marks; all ranks stop together below
            batch, stopped = None, True
        data_time = time.time() - end
        if it % accum == 0:
            lr, wd = schedules.apply(optimizer, run.global_step)
        out = None if stopped else step_fn(engine, batch, generator)
        loss, step_metrics = out if isinstance(out, tuple) else (out, {})
        # One all-reduce per iteration, before the backward's collectives: [stopped on its own
        # bad-file marks, its mark count, non-finite loss], summed over ranks.
        flags = torch.tensor([float(stopped), float(bad_files.local_count()) if bad_files else 0.0, 0.0],
                             dtype=torch.float64, device=device)
        if loss is not None:
            flags[2] = (~torch.isfinite(loss.detach())).any()
        stops, marks, non_finite = distributed.all_reduce_sum(flags).tolist()
        if bad_files is not None:
            bad_files.check(stops > 0, int(marks))
        if non_finite:
            raise NonFiniteLossError(
                f"loss is {loss.item()} (non-finite on at least one rank) at epoch {run.epoch + 1}, iteration "
                f"{it + 1}, global step {run.global_step}; stopped before the optimizer step, no checkpoint "
                f"written. Resume from the last checkpoint with a lower lr, bf16 instead of fp16, or check the data"
            )
        engine.backward(loss)
        boundary = (it + 1) % accum == 0
        norm = _param_grad_norm(engine.module) if boundary and own_norm else None
        engine.step()
        metrics = {"loss": loss.item(), **step_metrics, "lr": lr, "wd": wd}
        if boundary:
            run.global_step += 1
            norm = norm if own_norm else engine.get_global_grad_norm()
            metrics["grad_norm"] = None if norm is None else float(norm)
            if engine.fp16_enabled():
                metrics["loss_scale"] = float(engine.optimizer.loss_scale)
        metrics["data_time"] = data_time
        metrics["iter_time"] = time.time() - end
        logger.log_iter(run.epoch + 1, it, iters, run.global_step, remaining_after + iters - it - 1, metrics)
        end = time.time()
    stats = {k: v for k, v in logger.epoch_averages().items()
             if k in ("loss", "grad_norm", "iter_time", "data_time") or k in step_metrics}
    stats.update(lr=lr, wd=wd)
    if bad_files is not None:
        stats.update(bad_files.epoch_stats())
    return stats


def client_state(run: Run, names: List[List[str]], **extra) -> Dict[str, Any]:
    return {
        "epoch": run.epoch,
        "global_step": run.global_step,
        "sampler": {"seed": run.cfg.run.seed, "epoch": run.epoch, "world_size": run.info.world_size},
        "config": run.cfg.to_dict(),
        "param_names": names,
        **({"train_samples": run.train_samples} if run.train_samples is not None else {}),
        **extra,
    }


def fit(run: Run, engine, optimizer, names: List[List[str]], loader, steps: int, step_fn: StepFn,
        after_epoch: Optional[Callable[[Run], Dict[str, Any]]] = None) -> None:
    """Epochs from `run.epoch` to `optim.epochs`, each re-seeded by (seed, epoch, rank); saves every
    `run.save_every` epochs and at the end. `after_epoch(run)` (validation) returns extra client
    state for the checkpoint."""
    cfg, info = run.cfg, run.info
    plan = lr_plan(cfg, info.world_size)
    schedules = build_schedules(cfg, plan, steps)
    run.logger.info(plan.describe(None if cfg.optim.lr is not None else cfg.optim.base_lr))
    run.logger.info(f"{steps} optimizer steps ({steps * cfg.optim.accum_steps} iterations) per epoch, "
                    f"{cfg.optim.epochs * steps} in all; warmup {schedules.lr.warmup_steps} steps")
    generator = torch.Generator(device=info.device)
    while run.epoch < cfg.optim.epochs:
        set_epoch(loader, run.epoch)
        distributed.seed_all(distributed.derived_seed(cfg.run.seed, run.epoch, info.rank))
        generator.manual_seed(distributed.derived_seed(cfg.run.seed, run.epoch, info.rank, 1))
        stats = train_one_epoch(run, engine, optimizer, loader, schedules, steps, step_fn, generator)
        run.epoch += 1
        run.logger.log_epoch(run.epoch, run.global_step, stats)
        extra = after_epoch(run) if after_epoch is not None else {}
        if run.epoch % cfg.run.save_every == 0 or run.epoch == cfg.optim.epochs:
            path = ckpt.save_checkpoint(engine, run.out_dir, run_folder.epoch_tag(run.epoch),
                                        client_state(run, names, **extra), keep=cfg.run.keep_checkpoints)
            run.logger.info(f"saved {path}")
