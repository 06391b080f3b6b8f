"""The evaluation protocol: does masked-autoencoder pretraining give a better encoder than a random
initialisation given the same tuning? (docs/ssl_evaluation.md states it before any result.)

1. Data: an unlabelled pool, a validation split and a test split of procedural clips, each from
   its own seeds. Labelled subsets of the pool (class-balanced, one per downstream seed) give
   the label budgets.
2. Pretext: one pretraining per pretraining seed; its loss on fixed validation masks is logged
   against three trivial predictors, and the final model's loss on fixed test masks is read once.
3. Downstream, for the pretrained and the random initialisation alike:
   - frozen: k-NN and the BatchNorm linear probe on pooled features, the attentive probe on the
     tokens of one layer; every probe's lr from the same grid, chosen on validation;
   - finetuning at every label budget: the lr from the same grid, chosen on validation with
     downstream seed 0; each run stops when its validation accuracy stops improving and keeps its
     best state; then the other seeds with the chosen lr;
   - matched compute: the random init at every budget of 10% and below, trained for the
     pretraining steps plus the longest pretrained finetuning run of that budget, best validation
     state kept; the scratch baseline at a budget is the better of the two random-init rows.
4. The test split is read once per reported number, after every choice behind it was made: it is
   rendered in the main process only, and `HeldOut` refuses a second read of the same number.

Runs are independent and go to `workers` processes (each renders the pool and the validation
split itself, from the same seeds; none ever holds the test split). With a records folder
(`records.Records`) every finished training is kept on disk, and a run started again on that folder
goes on from there.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch

from video_mcmae.models import load_pretrained
from video_mcmae.models.baselines import BASELINES, log_key
from video_mcmae.synthetic import class_names
from video_mcmae.synthetic.scenes import SceneStyle

from . import features, report
from .data import ClipSet, predict_clips, render_clips, to_input
from .finetune import FinetuneRecipe, finetune
from .probes import AttentiveProbe, HeadRecipe, LinearProbe, accuracy, fit_head, knn_predict, predict
from .pretrain import PretrainRecipe, fixed_mask, masked_loss, pretrain
from .records import Records

INITS = ("pretrained", "random")
FROZEN = ("knn", "linear", "attentive")
# The encoder arguments the classifier must share with the pretraining model.
ENCODER_KWARGS = ("embed_dims", "depths", "num_heads", "mlp_ratio", "conv_kernel_size", "tubelet_size")
# Mask seeds of the fixed validation and test masks of the pretext loss.
VAL_MASK_SEED, TEST_MASK_SEED = 1001, 1002


# One large textured object over a faint ramp background with a small camera pan, so that the
# moving object is what a masked cube mostly holds (the demo's scenes, `make_synthetic_dataset.py
# --scenes`).
PLAIN_STYLE = SceneStyle(min_objects=1, max_objects=1, background="ramp", contrast=0.3, object_scale=2.0, camera=0.1)
# The protocol's scenes: the same object over a clearer ramp, a shorter class travel and a camera
# pan up to 25% of the frame, so that the class is the object's motion relative to a moving
# background (chosen on validation, docs/ssl_evaluation.md).
DEFAULT_STYLE = dataclasses.replace(PLAIN_STYLE, contrast=0.6, camera=0.25, travel_scale=0.6)
# The pretext: raw-pixel target, tube mask 0.75, a small decoder (64 wide, 2 blocks).
DEFAULT_PRETEXT = dict(norm_pix_loss=False, mask_ratio=0.75, mask_type="tube", decoder_embed_dim=64, decoder_depth=2,
                       decoder_num_heads=2)


@dataclass(frozen=True)
class EvalConfig:
    # data
    classes: int = 4
    frames: int = 8
    size: int = 48
    pool_per_class: int = 1000
    val_per_class: int = 100
    test_per_class: int = 200
    style: SceneStyle = DEFAULT_STYLE
    data_seed: int = 0
    # model and pretext
    preset: str = "tiny"
    model_kwargs: Dict = field(default_factory=lambda: dict(DEFAULT_PRETEXT))  # the pretraining model's
    pretrain: PretrainRecipe = PretrainRecipe(steps=4000, lr=1.5e-3, eval_every=250)
    pt_seeds: Tuple[int, ...] = (0, 1, 2)
    pretext_clips: int = 128  # validation / test clips the pretext loss is scored on
    # frozen evaluation
    probe_layer: str = "stage3"
    probe_lrs: Tuple[float, ...] = (1e-3, 3e-3)
    probe: HeadRecipe = HeadRecipe()
    knn_k: int = 20
    # finetuning
    budgets: Tuple[float, ...] = (0.01, 0.03, 0.1, 1.0)  # fractions of the pool's labels
    ft_lrs: Tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    # 8000 steps and a patience of 15 checks: every validation curve of the long-schedule check
    # (both inits, docs/ssl_evaluation.md, third round) reaches its best before either ends it.
    finetune: FinetuneRecipe = FinetuneRecipe(eval_every=100, patience=15, max_steps=8000)
    drop_path: float = 0.1
    seeds: Tuple[int, ...] = (0, 1, 2)  # downstream seeds; seed i uses pretraining seed i (cycling)
    matched_budgets: Tuple[float, ...] = (0.01, 0.03, 0.1)  # every budget the finetuning target covers
    workers: int = 2

    @property
    def class_names(self) -> Tuple[str, ...]:
        return class_names(self.classes)

    def per_class(self, budget: float) -> int:
        return max(1, round(budget * self.pool_per_class))


# The plumbing at the smallest sizes the models take (`tools/eval_ssl.py --quick`, the tests).
QUICK = dict(frames=4, size=32, pool_per_class=8, val_per_class=4, test_per_class=4, pretext_clips=8, knn_k=3,
             budgets=(0.25, 1.0), matched_budgets=(0.25,), seeds=(0, 1), pt_seeds=(0, 1), workers=1,
             pretrain=PretrainRecipe(steps=4, eval_every=2, batch=4), probe=HeadRecipe(epochs=2, eval_every=1),
             finetune=FinetuneRecipe(max_steps=4, eval_every=2, batch=4, warmup_steps=1))


# ----------------------------------------------------------------------------- models


def pretext_model(cfg: EvalConfig) -> torch.nn.Module:
    return timm.create_model(f"videoconvmae_{cfg.preset}_patch16", num_frames=cfg.frames, img_size=cfg.size,
                             **cfg.model_kwargs)


def classifier(cfg: EvalConfig, seed: int, encoder: Optional[Dict[str, torch.Tensor]]) -> torch.nn.Module:
    """The pretraining preset's encoder as a classifier with the official head (mean pooling)."""
    torch.manual_seed(seed)
    shared = {k: v for k, v in cfg.model_kwargs.items() if k in ENCODER_KWARGS}
    model = timm.create_model(f"videoconvvit_{cfg.preset}_patch16", num_frames=cfg.frames, img_size=cfg.size,
                              num_classes=cfg.classes, global_pool="avg", drop_path_rate=cfg.drop_path, **shared)
    if encoder is not None:
        load_pretrained(model, encoder)
    return model


def label_subset(labels: torch.Tensor, per_class: int, classes: int, seed: int) -> torch.Tensor:
    """`per_class` indices of every class, drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(classes):
        members = torch.nonzero(labels == c).flatten()
        if per_class > len(members):
            raise ValueError(f"a budget of {per_class} labels per class exceeds the pool's {len(members)}")
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picks)


# ----------------------------------------------------------------------------- the held-out split


class HeldOut:
    """The test split, read through `score` only: each reported number (`tag`) once."""

    def __init__(self, clips: ClipSet):
        self._clips = clips
        self.reads: List[tuple] = []

    def score(self, tag: tuple, fn: Callable[[ClipSet], float]) -> float:
        if tag in self.reads:
            raise RuntimeError(f"the test split was already read for {tag}")
        self.reads.append(tag)
        return fn(self._clips)


# ----------------------------------------------------------------------------- worker side

_WORKER: Dict[str, object] = {}


def _render(cfg: EvalConfig, split: str, per_class: int) -> ClipSet:
    return render_clips(cfg.class_names, split, per_class, cfg.frames, cfg.size, cfg.style, cfg.data_seed)


def _worker_init(cfg: EvalConfig, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(cfg=cfg, pool=_render(cfg, "train", cfg.pool_per_class), val=_render(cfg, "val", cfg.val_per_class))


def _pretrain_task(seed: int) -> dict:
    cfg, pool, val = _WORKER["cfg"], _WORKER["pool"], _WORKER["val"]
    torch.manual_seed(seed)
    model = pretext_model(cfg)
    clips = val.subset(torch.arange(min(cfg.pretext_clips, len(val))))
    result = pretrain(model, pool, cfg.pretrain, seed, clips, fixed_mask(model, clips, VAL_MASK_SEED))
    return dict(seed=seed, state={k: v.clone() for k, v in model.state_dict().items()}, curve=result.curve,
                seconds=result.seconds)


def _frozen_task(init: str, seed: int, encoder) -> dict:
    """k-NN, linear and attentive probes of one encoder on the pool's labels, each probe's lr chosen
    on validation; returns the chosen probes' states (the main process scores the test split)."""
    cfg, pool, val = _WORKER["cfg"], _WORKER["pool"], _WORKER["val"]
    started = time.perf_counter()
    model = classifier(cfg, seed, encoder)
    out = dict(init=init, seed=seed)
    pooled_pool, pooled_val = features.pooled(model, pool), features.pooled(model, val)
    out["knn_val"] = accuracy(knn_predict(pooled_pool, pool.labels, pooled_val, cfg.classes, cfg.knn_k), val.labels)
    out["pooled_pool"] = pooled_pool  # the k-NN's memory, for scoring the test split in the main process
    tokens_pool, tokens_val = features.tokens(model, pool, cfg.probe_layer), features.tokens(model, val, cfg.probe_layer)
    for name, make, train_f, val_f in (
            ("linear", lambda: LinearProbe(pooled_pool.shape[-1], cfg.classes), pooled_pool, pooled_val),
            ("attentive", lambda: AttentiveProbe(tokens_pool.shape[-1], cfg.classes), tokens_pool, tokens_val)):
        trials = []
        for lr in cfg.probe_lrs:
            torch.manual_seed(seed)
            result = fit_head(make(), train_f, pool.labels, val_f, val.labels, dataclasses.replace(cfg.probe, lr=lr), seed)
            trials.append(dict(lr=lr, val=result.val_acc, epoch=result.epoch, head=result.head))
        best = choose(trials)
        out[name] = dict(trials=[{k: t[k] for k in ("lr", "val", "epoch")} for t in trials], lr=best["lr"],
                         val=best["val"], epoch=best["epoch"], state=best["head"].state_dict())
    out["seconds"] = time.perf_counter() - started
    return out


def _finetune_task(init: str, budget: float, lr: float, seed: int, encoder, matched_steps: int = 0) -> dict:
    """One finetuning run on the budget's labels of downstream seed `seed`; `matched_steps` > 0 is a
    matched-compute run: a schedule of that many steps, no early stop (the best state is kept)."""
    cfg, pool, val = _WORKER["cfg"], _WORKER["pool"], _WORKER["val"]
    train = pool.subset(label_subset(pool.labels, cfg.per_class(budget), cfg.classes, seed))
    recipe = dataclasses.replace(cfg.finetune, lr=lr)
    if matched_steps:
        recipe = dataclasses.replace(recipe, max_steps=matched_steps, patience=0)
    model = classifier(cfg, seed, encoder)
    started = time.perf_counter()
    result = finetune(model, train, val, recipe, seed)
    return dict(init=init, budget=budget, lr=lr, seed=seed, matched=bool(matched_steps), val=result.val_acc, best_step=result.best_step,
                steps=result.steps, curve=result.curve, state=result.state, seconds=time.perf_counter() - started)


def _call(job):
    _, fn, args = job
    return fn(*args)


def _convert(obj, leaf: type, fn):
    """`fn` applied to every `leaf` inside nested dicts, lists and tuples."""
    if isinstance(obj, leaf):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _convert(v, leaf, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(v, leaf, fn) for v in obj)
    return obj


def _call_in_worker(indexed_job):
    # Tensors travel as arrays: plain pickling instead of one shared-memory file descriptor per
    # tensor (thousands of weights per protocol run).
    index, job = indexed_job
    return index, _convert(_call(job), torch.Tensor, lambda t: t.numpy())


# ----------------------------------------------------------------------------- main side


def choose(trials: Sequence[dict]) -> dict:
    """The trial with the best validation accuracy; among equals the first in grid order."""
    return max(trials, key=lambda t: t["val"])


class _Runner:
    """Runs jobs — (record key, function, arguments) — in this process (`workers` <= 1) or in a
    spawned pool (the workers render the pool and validation data once each), started at the
    first job no record answers. Each result is recorded as soon as it arrives."""

    def __init__(self, cfg: EvalConfig, threads: int, records: Records):
        self.cfg, self.threads, self.records = cfg, threads, records
        self.pool = None
        self.ready = False

    def _start(self) -> None:
        if self.ready:
            return
        if self.cfg.workers <= 1:
            _worker_init(self.cfg, self.threads)
        else:
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(self.cfg.workers, initializer=_worker_init, initargs=(self.cfg, self.threads))
        self.ready = True

    def map(self, jobs: List[tuple]) -> List[dict]:
        results = [self.records.get(key) for key, _, _ in jobs]
        todo = [(i, job) for i, job in enumerate(jobs) if results[i] is None]
        if todo:
            self._start()
        if self.pool is None:
            done = ((i, _call(job)) for i, job in todo)
        else:
            done = ((i, _convert(r, np.ndarray, torch.from_numpy))
                    for i, r in self.pool.imap_unordered(_call_in_worker, todo, chunksize=1))
        for i, result in done:
            self.records.put(jobs[i][0], result)
            results[i] = result
        return results

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def _stats(values: Sequence[float]) -> dict:
    v = np.array(values, dtype=float) * 100
    return dict(runs=[round(float(a), 2) for a in v], mean=float(v.mean()), std=float(v.std()))


def run_protocol(cfg: EvalConfig, log: Callable[[str], None] = print, threads: int = 1,
                 records: Optional[str] = None) -> dict:
    """The whole protocol (module docstring); returns every number, selection and timing.
    `records`: a folder keeping every finished training, from which a run started again goes on."""
    started = time.perf_counter()
    runner = _Runner(cfg, threads, _open_records(records, cfg, log))
    try:
        result = _run(cfg, runner, log, started)
    finally:
        runner.close()
    result["trainings_loaded"] = runner.records.loaded
    return result


def run_selection(cfg: EvalConfig, log: Callable[[str], None] = print, threads: int = 1,
                  records: Optional[str] = None) -> dict:
    """The protocol's validation half, for choosing settings: pretraining, the frozen probes and
    the finetuning lr search with downstream seed 0. The test split is never rendered. Its
    records are the protocol's own: a full run on the same folder goes on from them."""
    started = time.perf_counter()
    runner = _Runner(cfg, threads, _open_records(records, cfg, log))
    try:
        sel = _select(cfg, runner, log)
    finally:
        runner.close()
    frozen = {f"{r['init']} seed {r['seed']}": dict(knn=r["knn_val"], **{name: {k: r[name][k] for k in ("lr", "val", "epoch")}
                                                                          for name in ("linear", "attentive")})
              for r in sel["frozen"]}
    search = {f"{budget:g} {init}": [{k: t[k] for k in ("lr", "val", "best_step", "steps")} for t in sel["search"]
                                     if t["budget"] == budget and t["init"] == init]
              for budget in cfg.budgets for init in INITS}
    for name, row in frozen.items():
        log(f"frozen, {name}: validation k-NN {row['knn'] * 100:.1f}, linear {row['linear']['val'] * 100:.1f}, "
            f"attentive {row['attentive']['val'] * 100:.1f}")
    return dict(config=dataclasses.asdict(cfg), pretext=dict(val_baselines=sel["val_baselines"],
                                                             curves=[pt["curve"] for pt in sel["pts"]]),
                frozen=frozen, finetune_search=search, seconds=time.perf_counter() - started)


def _open_records(folder: Optional[str], cfg: EvalConfig, log: Callable[[str], None]) -> Records:
    records = Records(folder, cfg)
    count = len(records)
    if count:
        log(f"going on from {count} finished trainings in {folder}")
    return records


def _encoder(cfg: EvalConfig, encoders: Dict[int, dict], init: str, i: int):
    """The encoder downstream seed number `i` starts from: pretraining seed i (cycling), or none."""
    return encoders[_pt_seed(cfg, i)] if init == "pretrained" else None


def _pt_seed(cfg: EvalConfig, i: int) -> int:
    return cfg.pt_seeds[i % len(cfg.pt_seeds)]


def _key(kind: str, init: str, seed: int, i: int, cfg: EvalConfig, **parts) -> str:
    """A training's record key: what it is, its initialisation (with its pretraining seed) and seeds."""
    start = f"pt{_pt_seed(cfg, i)}" if init == "pretrained" else init
    return "-".join([kind, start, f"s{seed}"] + [f"{k}{v:g}" for k, v in parts.items()])


def _select(cfg: EvalConfig, runner: _Runner, log: Callable[[str], None]) -> dict:
    """Pretraining, the frozen probes of every (init, seed) and the finetuning lr search on seed 0:
    every run whose only use of data is the pool and the validation split."""
    val = _render(cfg, "val", cfg.val_per_class)
    log(f"data: pool {cfg.pool_per_class * cfg.classes}, validation {len(val)}, test {cfg.test_per_class * cfg.classes} "
        f"clips of {cfg.frames}x{cfg.size}x{cfg.size}, {cfg.classes} classes")
    reference = pretext_model(cfg)
    val_clips = val.subset(torch.arange(min(cfg.pretext_clips, len(val))))
    val_baselines = _baselines(reference, val_clips, fixed_mask(reference, val_clips, VAL_MASK_SEED))

    def frozen_jobs(init: str) -> List[tuple]:
        return [(_key("frozen", init, seed, i, cfg), _frozen_task, (init, seed, _encoder(cfg, encoders, init, i)))
                for i, seed in enumerate(cfg.seeds)]

    def search_jobs(init: str) -> List[tuple]:
        return [(_key("finetune", init, cfg.seeds[0], 0, cfg, budget=budget, lr=lr), _finetune_task,
                 (init, budget, lr, cfg.seeds[0], _encoder(cfg, encoders, init, 0)))
                for budget in cfg.budgets for lr in cfg.ft_lrs]

    # The random initialisation's runs need no pretraining: they share the workers with it. Long
    # runs go first and the short probes last, so that no worker waits long at the end of a batch.
    encoders: Dict[int, dict] = {}
    first = runner.map([(f"pretrain-pt{seed}", _pretrain_task, (seed,)) for seed in cfg.pt_seeds]
                       + search_jobs("random") + frozen_jobs("random"))
    pts = sorted(first[:len(cfg.pt_seeds)], key=lambda r: r["seed"])
    for pt in pts:
        log(f"pretraining seed {pt['seed']}: validation loss {pt['curve'][0][1]:.5f} -> {pt['curve'][-1][1]:.5f} "
            f"(best trivial {min(val_baselines.values()):.5f}), {pt['seconds']:.0f} s")
    encoders.update({pt["seed"]: pt["state"] for pt in pts})
    results = first[len(cfg.pt_seeds):] + runner.map(search_jobs("pretrained") + frozen_jobs("pretrained"))
    search = sorted((r for r in results if "budget" in r),
                    key=lambda r: (cfg.budgets.index(r["budget"]), INITS.index(r["init"])))
    chosen = {}
    for budget in cfg.budgets:
        for init in INITS:
            trials = [r for r in search if r["budget"] == budget and r["init"] == init]
            chosen[(budget, init)] = choose(trials)
            log(f"budget {budget:g} ({cfg.per_class(budget)}/class), {init}: validation "
                + ", ".join(f"lr {t['lr']:g} {t['val'] * 100:.1f} (step {t['best_step']}/{t['steps']})" for t in trials)
                + f" -> lr {chosen[(budget, init)]['lr']:g}")
    return dict(reference=reference, val_baselines=val_baselines, pts=pts, encoders=encoders,
                frozen=[r for r in results if "knn_val" in r], search=search, chosen=chosen)


def _run(cfg: EvalConfig, runner: _Runner, log: Callable[[str], None], started: float) -> dict:
    sel = _select(cfg, runner, log)
    reference, pts, search, chosen = sel["reference"], sel["pts"], sel["search"], sel["chosen"]

    def encoder(init: str, i: int):
        return _encoder(cfg, sel["encoders"], init, i)

    test = HeldOut(_render(cfg, "test", cfg.test_per_class))

    # The pretext on the test split: one read per pretraining seed (the baselines: one read).
    def test_pretext(clips: ClipSet) -> dict:
        clips = clips.subset(torch.arange(min(cfg.pretext_clips, len(clips))))
        mask = fixed_mask(reference, clips, TEST_MASK_SEED)
        out = dict(baselines=_baselines(reference, clips, mask))
        for pt in pts:
            model = pretext_model(cfg)
            model.load_state_dict(pt["state"])
            out[pt["seed"]] = masked_loss(model, clips, mask)
        return out

    pretext_test = test.score(("pretext",), test_pretext)

    # The matched-compute runs (the longest: first), and the other seeds with the chosen lr.
    # Scratch gets the pretraining steps on top of the longest pretrained finetuning of the budget.
    matched_steps = {b: cfg.pretrain.steps + max(r["steps"] for r in search if r["budget"] == b and r["init"] == "pretrained")
                     for b in cfg.matched_budgets}
    second = [(_key("matched", "random", seed, i, cfg, budget=budget, lr=chosen[(budget, "random")]["lr"],
                    steps=matched_steps[budget]),
               _finetune_task, ("random", budget, chosen[(budget, "random")]["lr"], seed, None, matched_steps[budget]))
              for budget in cfg.matched_budgets for i, seed in enumerate(cfg.seeds)]
    second += [(_key("finetune", init, seed, i, cfg, budget=budget, lr=chosen[(budget, init)]["lr"]), _finetune_task,
                (init, budget, chosen[(budget, init)]["lr"], seed, encoder(init, i)))
               for budget in cfg.budgets for init in INITS for i, seed in enumerate(cfg.seeds) if i > 0]
    results = runner.map(second)
    runs = {(b, init, cfg.seeds[0]): chosen[(b, init)] for b in cfg.budgets for init in INITS}
    runs.update({(r["budget"], r["init"], r["seed"]): r for r in results if not r["matched"]})
    matched = {(r["budget"], r["seed"]): r for r in results if r["matched"]}

    # Test reads: one per reported number, after every choice above.
    def finetune_score(run: dict, tag: tuple) -> float:
        model = classifier(cfg, 0, None)
        model.load_state_dict(run["state"])
        return test.score(tag, lambda clips: accuracy(predict_clips(model, clips), clips.labels))

    curve = {}
    for budget in cfg.budgets:
        row = {}
        for init in INITS:
            picked = [runs[(budget, init, seed)] for seed in cfg.seeds]
            row[init] = dict(lr=chosen[(budget, init)]["lr"], val=[r["val"] for r in picked],
                             steps=[r["steps"] for r in picked], best_steps=[r["best_step"] for r in picked],
                             test=_stats([finetune_score(r, ("finetune", budget, init, r["seed"])) for r in picked]))
        if budget in cfg.matched_budgets:
            picked = [matched[(budget, seed)] for seed in cfg.seeds]
            row["random_matched"] = dict(lr=picked[0]["lr"], steps=[r["steps"] for r in picked],
                                         best_steps=[r["best_step"] for r in picked], val=[r["val"] for r in picked],
                                         test=_stats([finetune_score(r, ("matched", budget, r["seed"])) for r in picked]))
        row["gap"] = row["pretrained"]["test"]["mean"] - row["random"]["test"]["mean"]
        row["gap_best"] = report.gap_to_best_scratch(row)
        curve[budget] = row
        log(f"budget {budget:g}: test top-1 pretrained {row['pretrained']['test']['mean']:.1f} ± "
            f"{row['pretrained']['test']['std']:.1f}, random {row['random']['test']['mean']:.1f} ± "
            f"{row['random']['test']['std']:.1f}" + (f", random with matched compute {row['random_matched']['test']['mean']:.1f}"
                                                      if "random_matched" in row else ""))

    frozen_rows = _frozen_scores(cfg, sel["frozen"], encoder, _pool_labels(cfg), test, log)
    return dict(config=dataclasses.asdict(cfg), pretext=_pretext_summary(cfg, pts, sel["val_baselines"], pretext_test),
                label_efficiency={str(b): r for b, r in curve.items()}, frozen=frozen_rows,
                test_reads=[list(t) for t in test.reads], seconds=time.perf_counter() - started,
                # every training's own time, whichever process (or earlier, stopped run) ran it
                training_seconds=sum(r["seconds"] for r in pts + sel["frozen"] + search + results),
                chance=100.0 / cfg.classes)


def _pool_labels(cfg: EvalConfig) -> torch.Tensor:
    """The pool's labels without rendering it: clips are interleaved by class (`render_clips`)."""
    return torch.arange(cfg.classes).repeat(cfg.pool_per_class)


def _baselines(model, clips: ClipSet, mask: torch.Tensor) -> Dict[str, float]:
    values = model.trivial_baselines(to_input(clips.clips), mask)
    return {name: values[log_key(name)] for name in BASELINES}


def _frozen_scores(cfg, frozen, encoder, pool_labels: torch.Tensor, test: HeldOut, log) -> dict:
    """Test accuracy of every chosen probe: one read per (init, seed) for its three probes."""
    rows = {name: {init: [] for init in INITS} for name in FROZEN}
    chosen = {name: {init: [] for init in INITS} for name in FROZEN}
    for r in sorted(frozen, key=lambda r: (r["init"], r["seed"])):
        i = cfg.seeds.index(r["seed"])
        model = classifier(cfg, r["seed"], encoder(r["init"], i))

        def scores(clips: ClipSet, r=r, model=model) -> Dict[str, float]:
            pooled_test = features.pooled(model, clips)
            tokens_test = features.tokens(model, clips, cfg.probe_layer)
            linear = LinearProbe(pooled_test.shape[-1], cfg.classes)
            linear.load_state_dict(r["linear"]["state"])
            attentive = AttentiveProbe(tokens_test.shape[-1], cfg.classes)
            attentive.load_state_dict(r["attentive"]["state"])
            knn = knn_predict(r["pooled_pool"], pool_labels, pooled_test, cfg.classes, cfg.knn_k)
            return dict(knn=accuracy(knn, clips.labels),
                        linear=accuracy(predict(linear, pooled_test), clips.labels),
                        attentive=accuracy(predict(attentive, tokens_test), clips.labels))

        got = test.score(("frozen", r["init"], r["seed"]), scores)
        for name in FROZEN:
            rows[name][r["init"]].append(got[name])
        chosen["knn"][r["init"]].append(dict(val=r["knn_val"]))
        for name in ("linear", "attentive"):
            chosen[name][r["init"]].append({k: r[name][k] for k in ("lr", "val", "epoch", "trials")})
    out = {}
    for name in FROZEN:
        out[name] = {init: dict(test=_stats(rows[name][init]), selection=chosen[name][init]) for init in INITS}
        out[name]["gap"] = out[name]["pretrained"]["test"]["mean"] - out[name]["random"]["test"]["mean"]
        log(f"frozen {name}: test top-1 pretrained {out[name]['pretrained']['test']['mean']:.1f}, "
            f"random {out[name]['random']['test']['mean']:.1f}")
    out["layer"] = cfg.probe_layer
    return out


def _pretext_summary(cfg, pts, val_baselines, pretext_test) -> dict:
    baselines = pretext_test["baselines"]
    finals = [pretext_test[pt["seed"]] for pt in pts]
    best = min(baselines, key=baselines.get)
    return dict(test_losses=finals, test_loss=float(np.mean(finals)), test_std=float(np.std(finals)),
                test_baselines=baselines, best_baseline=best, ratio=float(np.mean(finals)) / baselines[best],
                val_baselines=val_baselines, curves=[pt["curve"] for pt in pts], seeds=list(cfg.pt_seeds),
                seconds=[pt["seconds"] for pt in pts])
