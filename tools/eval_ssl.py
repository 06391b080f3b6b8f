"""Does masked-autoencoder pretraining learn, and does it help? One in-process run on procedural clips.

  1. render     labelled procedural clips in memory (``--style scenes``: several objects over a
                panning wave background, ``video_mcmae.synthetic.scenes``; ``plain``: the demo's
                single object); train and test clips come from different seeds
  2. pretrain   VideoConvMAE on the train clips without labels; the model's own loss on fixed
                test clips and masks is logged against three trivial predictors in the model's
                target space: zero, the best constant cube, a copy of the nearest visible cube
  3. evaluate   the same encoder in VideoConvViT, pretrained vs randomly initialised, on the
                held-out clips: k-NN (cosine) and a linear probe on frozen mean-pooled features
                (all train labels), and finetuning on a few labels with the official recipe
                (mean pooling, layer decay, AdamW, warmup + cosine); every downstream number
                over several seeds (initialisation, label subset, batch order)

Writes <out>/result.json (every number), <out>/table.md (mean ± std), <out>/eval_ssl.png (loss
curve against the baselines; accuracies with error bars and chance), <out>/log.txt.

    python tools/eval_ssl.py --out output/eval_ssl            # default size (<= 30 min, 2 CPU cores)
    python tools/eval_ssl.py --quick --out /tmp/eval_ssl      # plumbing only, seconds

``run(parse_args([...]))`` returns the summary numbers (the demo calls it with ``--quick``).
How to read the numbers and the targets: docs/ssl_evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from video_mcmae.cli import run_cli
from video_mcmae.config import ConfigError
from video_mcmae.engine.optim import param_groups
from video_mcmae.engine.schedule import CosineSchedule, Schedules
from video_mcmae.models import load_pretrained
from video_mcmae.synthetic import SHAPES, TEXTURES, class_names, render_video, sample_params, video_rng
from video_mcmae.synthetic.scenes import FILLS, SCENE_BACKGROUNDS, SceneStyle, render_scene, sample_scene

EVALS = ("knn", "linprobe", "finetune")
EVAL_TITLES = {"knn": "k-NN (frozen)", "linprobe": "linear probe (frozen)", "finetune": "few-label finetune"}
BASELINES = ("zero", "constant", "nearest_visible")
INITS = ("pretrained", "random")
# The bar: pretext loss <= 0.7 x the best trivial predictor; pretrained beats random init by
# >= 15 top-1 points on k-NN or the linear probe and by >= 10 on few-label finetuning (seed means).
TARGET_LOSS_RATIO = 0.7
TARGET_GAPS = {"knn": 15.0, "linprobe": 15.0, "finetune": 10.0}
# The pretraining presets' encoder arguments that the classifier must share.
ENCODER_KWARGS = ("embed_dims", "depths", "num_heads", "mlp_ratio", "conv_kernel_size", "tubelet_size")
# The default scenes: large squares filled with colour ramps over a ramp background, a small camera
# pan. The official per-cube normalised target learns on them (a ramp cube normalises to a
# predictable plane); on the default waves and textures it stayed at its trivial level.
EVAL_SCENES = SceneStyle(max_objects=2, background="ramp", contrast=1.0, shape="square", texture="solid",
                         fill="ramp", fill_amplitude=0.3, object_scale=1.6, travel_scale=1.0, camera=0.1)
# --quick: the plumbing at the smallest sizes the models take (explicit flags still win).
QUICK = dict(train_per_class=4, test_per_class=3, frames=4, size=32, pt_steps=4, eval_every=2, eval_clips=8,
             batch=4, seeds=[0, 1], pt_seeds=[0, 1], knn_k=3, ft_epochs=1, ft_batch=4)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/eval_ssl", help="output folder (created; files in it are replaced)")
    p.add_argument("--quick", action="store_true", help="tiny sizes that check the plumbing, not the numbers")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, one per core); use 1 on a machine that other jobs "
                        "share: there 2 threads on 2 cores ran 6x slower than 1 (spinning OpenMP workers)")
    d = p.add_argument_group("data")
    d.add_argument("--style", choices=("scenes", "plain"), default="scenes",
                   help="scenes: several objects over a panning wave background; plain: the demo's videos")
    d.add_argument("--classes", type=int, default=4, help="the first N motion classes (even, 4..12)")
    d.add_argument("--train-per-class", type=int, default=1000)
    d.add_argument("--test-per-class", type=int, default=50)
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--size", type=int, default=64, help="frame height and width (a multiple of 16)")
    d.add_argument("--data-seed", type=int, default=0)
    s = p.add_argument_group("scenes (--style scenes)")
    defaults = EVAL_SCENES
    s.add_argument("--min-objects", type=int, default=defaults.min_objects)
    s.add_argument("--max-objects", type=int, default=defaults.max_objects)
    s.add_argument("--waves", type=int, default=defaults.num_waves, help="plane waves in the background (0: flat)")
    s.add_argument("--max-frequency", type=int, default=defaults.max_frequency, help="most wave periods per frame")
    s.add_argument("--contrast", type=float, default=defaults.contrast, help="background amplitude (waves or ramp), 0..1")
    s.add_argument("--camera", type=float, default=defaults.camera, help="largest pan, fraction of the frame")
    s.add_argument("--background", choices=SCENE_BACKGROUNDS, default=defaults.background,
                   help="waves: plane waves on the torus; ramp: one linear ramp")
    s.add_argument("--object-scale", type=float, default=defaults.object_scale, help="object size factor")
    s.add_argument("--travel-scale", type=float, default=defaults.travel_scale, help="class travel factor")
    s.add_argument("--shape", choices=SHAPES, default=defaults.shape, help="force one object shape")
    s.add_argument("--texture", choices=TEXTURES, default=defaults.texture, help="force one object texture")
    s.add_argument("--fill", choices=FILLS, default=defaults.fill,
                   help="texture: the object's texture; ramp: a linear colour ramp across each object")
    s.add_argument("--fill-amplitude", type=float, default=defaults.fill_amplitude, help="ramp fill strength, 0..1")
    m = p.add_argument_group("model and pretext")
    m.add_argument("--preset", default="tiny", help="videoconvmae_<preset>_patch16 / videoconvvit_<preset>_patch16")
    m.add_argument("--model-kwargs", default="{}",
                   help="JSON overrides of the pretraining preset, e.g. '{\"embed_dims\": [64, 96, 128]}'; the "
                        "encoder's (embed_dims, depths, num_heads, mlp_ratio, ...) also go to the classifier")
    m.add_argument("--mask-type", choices=("tube", "random"), default="tube")
    m.add_argument("--mask-ratio", type=float, default=0.75)
    m.add_argument("--norm-pix-loss", type=int, choices=(0, 1), default=1,
                   help="1: per-cube normalised target (official); 0: raw pixel target")
    m.add_argument("--std-floor", type=float, default=0.0, help="norm_pix_std_floor in [0, 1] pixel units")
    t = p.add_argument_group("pretraining")
    t.add_argument("--pt-steps", type=int, default=2400)
    t.add_argument("--pt-lr", type=float, default=1e-3)
    t.add_argument("--pt-weight-decay", type=float, default=0.05)
    t.add_argument("--pt-warmup", type=float, default=0.05, help="warmup fraction of the steps")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--pt-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="one pretraining per seed; downstream seed i uses the encoder of pretraining seed i "
                        "(cycling when there are fewer)")
    t.add_argument("--pt-augment", type=int, choices=(0, 1), default=1,
                   help="1: random flips and time reversal of the (unlabelled) pretraining clips")
    t.add_argument("--eval-every", type=int, default=100, help="steps between test-loss points")
    t.add_argument("--eval-clips", type=int, default=128, help="test clips (fixed masks) for the loss curve")
    e = p.add_argument_group("downstream")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--frozen-pool", choices=("mean", "time"), default="mean",
                   help="features for k-NN and the probe: mean of all stage-3 tokens (the classifier's own); "
                        "time: mean over space per time step, concatenated")
    e.add_argument("--knn-k", type=int, default=20)
    e.add_argument("--ft-fraction", type=float, default=0.1, help="fraction of the train labels for finetuning")
    e.add_argument("--ft-epochs", type=int, default=12)
    e.add_argument("--ft-batch", type=int, default=16)
    e.add_argument("--ft-lr", type=float, default=1e-3)
    e.add_argument("--ft-weight-decay", type=float, default=0.05)
    e.add_argument("--ft-warmup-epochs", type=float, default=2)
    e.add_argument("--layer-decay", type=float, default=0.75)
    e.add_argument("--drop-path", type=float, default=0.1)
    e.add_argument("--label-smoothing", type=float, default=0.1)
    return p


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    """The tool's arguments; ``--quick`` changes the defaults to ``QUICK`` (explicit flags still win)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    try:
        args.model_kwargs = json.loads(args.model_kwargs) if isinstance(args.model_kwargs, str) else args.model_kwargs
    except json.JSONDecodeError as e:
        parser.error(f"--model-kwargs is not JSON ({e}); write e.g. '{{\"decoder_depth\": 2}}'")
    if not isinstance(args.model_kwargs, dict):
        parser.error("--model-kwargs must be a JSON object, e.g. '{\"decoder_depth\": 2}'")
    for name in ("train_per_class", "test_per_class", "pt_steps", "eval_every", "eval_clips", "batch", "knn_k",
                 "ft_epochs", "ft_batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.ft_fraction <= 1:
        parser.error("--ft-fraction must be in (0, 1]")
    try:
        scene_style(args)
    except ValueError as e:
        parser.error(f"{e} (the scene options: --min-objects, --camera, ...)")
    return args


# ----------------------------------------------------------------------------- data


def scene_style(args: argparse.Namespace) -> SceneStyle:
    return SceneStyle(min_objects=args.min_objects, max_objects=args.max_objects, num_waves=args.waves,
                      max_frequency=args.max_frequency, contrast=args.contrast, camera=args.camera,
                      object_scale=args.object_scale, travel_scale=args.travel_scale, shape=args.shape,
                      texture=args.texture, fill=args.fill, fill_amplitude=args.fill_amplitude,
                      background=args.background)


def render_split(args: argparse.Namespace, split: str, per_class: int) -> tuple:
    """uint8 clips ``(N, T, H, W, 3)`` and labels ``(N,)``, class-balanced; clip (label, i) depends on
    its own seed only."""
    style = scene_style(args)
    clips, labels = [], []
    for index in range(per_class):
        for label, name in enumerate(class_names(args.classes)):
            rng = video_rng(args.data_seed, split, label, index)
            if args.style == "scenes":
                clips.append(render_scene(sample_scene(name, rng, args.frames, args.size, args.size, style)))
            else:
                clips.append(render_video(sample_params(name, rng, args.frames, args.size, args.size)))
            labels.append(label)
    return np.stack(clips), np.array(labels)


def to_input(clips: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, T, H, W, 3)`` -> ImageNet-normalised ``(N, 3, T, H, W)`` (the models' default data_mean/std)."""
    x = torch.from_numpy(clips).float().div_(255).permute(0, 4, 1, 2, 3)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1)
    return ((x - mean) / std).contiguous()


def batches(n: int, size: int):
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


# ----------------------------------------------------------------------------- pretext


@torch.no_grad()
def trivial_baselines(model, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, float]:
    """The model's own trivial predictors (`models.baselines`) on the test clips and masks, in its
    target space: zero, the best constant cube over these masked cubes, the nearest visible cube."""
    values = model.trivial_baselines(x, mask)
    return dict(zero=values["baseline_zero"], constant=values["baseline_mean"],
                nearest_visible=values["baseline_nearest"])


@torch.no_grad()
def test_loss(model, x: torch.Tensor, mask: torch.Tensor) -> float:
    model.eval()
    total = sum(float(model(x[b], mask=mask[b])[0]) * len(x[b]) for b in batches(len(x), 32))
    model.train()
    return total / len(x)


def pretext_model(args):
    """A fresh VideoConvMAE of the configured preset and pretext (initialised from torch's global seed)."""
    kwargs = dict(num_frames=args.frames, img_size=args.size, mask_type=args.mask_type, mask_ratio=args.mask_ratio,
                  norm_pix_loss=bool(args.norm_pix_loss), norm_pix_std_floor=args.std_floor)
    try:
        return timm.create_model(f"videoconvmae_{args.preset}_patch16", **{**kwargs, **args.model_kwargs})
    except (TypeError, RuntimeError) as e:
        raise ConfigError(f"--preset/--model-kwargs: videoconvmae_{args.preset}_patch16 rejects them ({e})") from None


def pretrain(args, seed: int, train_x: torch.Tensor, test_x: torch.Tensor, test_mask: torch.Tensor,
             log: Callable[[str], None]) -> dict:
    """Pretrain with the model's own masks and loss from pretraining seed `seed` (initialisation,
    masks, batch order); returns the model and its test-loss curve on the fixed test clips and masks."""
    torch.manual_seed(seed)
    model = pretext_model(args)
    masks = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(param_groups(model, args.pt_weight_decay), lr=args.pt_lr, betas=(0.9, 0.95))
    schedules = Schedules(lr=CosineSchedule(args.pt_lr, args.pt_lr * 0.01, args.pt_steps,
                                            round(args.pt_warmup * args.pt_steps)),
                          wd=CosineSchedule(args.pt_weight_decay, args.pt_weight_decay, args.pt_steps))
    order = torch.Generator().manual_seed(seed + 2)
    curve = [(0, test_loss(model, test_x, test_mask))]
    train_curve = []
    started = time.perf_counter()
    for step in range(args.pt_steps):
        schedules.apply(opt, step)
        x = train_x[torch.randint(len(train_x), (args.batch,), generator=order)]
        if args.pt_augment:  # new unlabelled clips for free: the pretext needs no label to survive them
            flip = torch.rand(len(x), generator=order) < 0.5
            reverse = torch.rand(len(x), generator=order) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)
            x = torch.where(reverse.view(-1, 1, 1, 1, 1), x.flip(2), x)
        loss = model(x, generator=masks)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_curve.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.pt_steps:
            curve.append((step + 1, test_loss(model, test_x, test_mask)))
            log(f"pretrain seed {seed} step {step + 1}/{args.pt_steps}: train {np.mean(train_curve[-args.eval_every:]):.4f}, "
                f"test {curve[-1][1]:.4f} ({time.perf_counter() - started:.0f}s)")
    return dict(model=model, curve=curve, seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------- downstream


def classifier(args, seed: int, encoder_state: dict = None):
    """The pretraining preset's encoder as a classifier with the official mean pooling."""
    torch.manual_seed(seed)
    shared = {k: v for k, v in args.model_kwargs.items() if k in ENCODER_KWARGS}
    model = timm.create_model(f"videoconvvit_{args.preset}_patch16", num_frames=args.frames, img_size=args.size,
                              num_classes=args.classes, global_pool="avg", drop_path_rate=args.drop_path, **shared)
    if encoder_state is not None:
        load_pretrained(model, encoder_state)
    return model


@torch.no_grad()
def features(model, x: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """Frozen features. ``mean``: the classifier's own pooled output (the mean of the stage-3 tokens,
    then fc_norm); ``time``: the stage-3 tokens averaged over space only, one vector per time step,
    concatenated and layer-normalised (a mean over time cannot tell a motion from its reverse)."""
    model.eval()
    out = []
    for b in batches(len(x), 32):
        f = model.forward_features(x[b])
        if pool == "mean":
            out.append(f["pooled"])
        else:
            timed = f["stage3"].flatten(3).mean(-1).transpose(1, 2).flatten(1)  # (B, T' * C)
            out.append(F.layer_norm(timed, timed.shape[-1:]))
    return torch.cat(out)


def knn_accuracy(train_f, train_y, test_f, test_y, k: int, classes: int, temperature: float = 0.07) -> float:
    """Cosine k-NN with similarity-weighted votes (exp(sim / T), as in DINO's evaluation)."""
    sim, idx = (F.normalize(test_f, dim=-1) @ F.normalize(train_f, dim=-1).T).topk(min(k, len(train_f)), dim=-1)
    votes = torch.zeros(len(test_f), classes).scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return float((votes.argmax(-1) == test_y).float().mean())


def linear_probe(train_f, train_y, test_f, test_y, classes: int, seed: int, l2: float = 1e-3) -> float:
    """A linear classifier on standardised frozen features (as MAE's probe: a BatchNorm without affine
    before the head), fitted to convergence with L-BFGS."""
    torch.manual_seed(seed)
    mean, std = train_f.mean(0), train_f.std(0) + 1e-6
    a, b = (train_f - mean) / std, (test_f - mean) / std
    head = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(a), train_y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((head(b).argmax(-1) == test_y).float().mean())


def few_labels(y: torch.Tensor, fraction: float, classes: int, seed: int) -> torch.Tensor:
    """Indices of ``fraction`` of the labels, the same number from every class."""
    g = torch.Generator().manual_seed(seed)
    per_class = max(1, round(fraction * len(y) / classes))
    return torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:per_class]]
                      for c in range(classes)])


def finetune(args, model, x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             seed: int) -> float:
    """The official finetuning recipe on a few labels: AdamW over layer-decayed groups (no decay on
    norms, biases, tables), linear warmup then cosine per step, label smoothing; test top-1."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, args.ft_weight_decay, args.layer_decay), lr=args.ft_lr,
                            betas=(0.9, 0.999))
    steps_per_epoch = max(1, len(x) // args.ft_batch)
    total = args.ft_epochs * steps_per_epoch
    schedules = Schedules(lr=CosineSchedule(args.ft_lr, 1e-6, total, round(args.ft_warmup_epochs * steps_per_epoch)),
                          wd=CosineSchedule(args.ft_weight_decay, args.ft_weight_decay, total))
    model.train()
    step = 0
    for _ in range(args.ft_epochs):
        perm = torch.randperm(len(x))
        for j in range(steps_per_epoch):
            schedules.apply(opt, step)
            idx = perm[j * args.ft_batch:(j + 1) * args.ft_batch]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(test_x[b]).argmax(-1) for b in batches(len(test_x), 32)])
    return float((pred == test_y).float().mean())


# ----------------------------------------------------------------------------- reporting


def stats(values: List[float]) -> dict:
    """Top-1 in percent over seeds: runs, mean and (population) std."""
    v = np.array(values) * 100
    return dict(runs=[round(float(a), 2) for a in v], mean=float(v.mean()), std=float(v.std()))


def summarise(args, baselines: Dict[str, float], pts: List[dict], accuracies: Dict[str, Dict[str, List[float]]],
              seconds: float) -> dict:
    best_name = min(baselines, key=baselines.get)
    best = baselines[best_name]
    finals = [pt["curve"][-1][1] for pt in pts]
    final = float(np.mean(finals))
    curve = [(step, float(np.mean([pt["curve"][i][1] for pt in pts]))) for i, (step, _) in enumerate(pts[0]["curve"])]
    downstream = {}
    for key in EVALS:
        row = {init: stats(accuracies[key][init]) for init in INITS}
        row["gap"] = row["pretrained"]["mean"] - row["random"]["mean"]
        row["target_gap"] = TARGET_GAPS[key]
        downstream[key] = row
    targets = dict(
        loss=final <= TARGET_LOSS_RATIO * best,
        frozen=max(downstream["knn"]["gap"], downstream["linprobe"]["gap"]) >= TARGET_GAPS["knn"],
        finetune=downstream["finetune"]["gap"] >= TARGET_GAPS["finetune"])
    return dict(
        pretext=dict(final_loss=final, final_losses=finals, final_std=float(np.std(finals)), baselines=baselines,
                     best_baseline=best_name, ratio_to_best=final / best, target_ratio=TARGET_LOSS_RATIO,
                     curve=curve, curves=[pt["curve"] for pt in pts], seeds=list(args.pt_seeds),
                     seconds=sum(pt["seconds"] for pt in pts)),
        downstream=downstream, chance=100.0 / args.classes, targets=targets, all_targets_met=all(targets.values()),
        setup=dict(machine=f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
                   train_clips=args.train_per_class * args.classes, test_clips=args.test_per_class * args.classes,
                   clip=f"{args.frames}x{args.size}x{args.size}", seeds=list(args.seeds),
                   pt_seeds=list(args.pt_seeds), pt_steps=args.pt_steps,
                   few_labels=max(1, round(args.ft_fraction * args.train_per_class)) * args.classes,
                   frozen_pool=args.frozen_pool),
        args=dict(vars(args)), seconds=seconds)


def markdown_table(summary: dict) -> str:
    p, s = summary["pretext"], summary["setup"]
    def mark(ok: bool) -> str:
        # A quick run's few clips make any gap noise: saying "met" there would mislead.
        if summary["args"]["quick"]:
            return "not judged at --quick size"
        return "met" if ok else "**missed**"

    lines = [
        f"Setup: {s['machine']}; {s['train_clips']} train / {s['test_clips']} test clips of {s['clip']}; "
        f"{s['pt_steps']} pretraining steps for each pretraining seed {s['pt_seeds']}; "
        f"downstream seeds {s['seeds']}; frozen features pooled by {s['frozen_pool']}; "
        f"few-label finetuning on {s['few_labels']} labels; "
        f"chance {summary['chance']:.1f}%; {summary['seconds'] / 60:.1f} min in all.",
        "",
        "| pretext (test clips, fixed masks) | loss |",
        "|---|---:|",
        f"| predict zero | {p['baselines']['zero']:.4f} |",
        f"| best constant cube | {p['baselines']['constant']:.4f} |",
        f"| copy the nearest visible cube | {p['baselines']['nearest_visible']:.4f} |",
        f"| pretrained model (final; mean ± std over {len(p['final_losses'])} pretraining seeds) | "
        f"{p['final_loss']:.4f} ± {p['final_std']:.4f} |",
        f"| ratio to the best trivial ({p['best_baseline']}) | {p['ratio_to_best']:.3f} "
        f"(target <= {p['target_ratio']}: {mark(summary['targets']['loss'])}) |",
        "",
        "| top-1 % (mean ± std over seeds) | pretrained | random init | gap | target gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in EVALS:
        r = summary["downstream"][key]
        met = mark(summary["targets"]["finetune" if key == "finetune" else "frozen"])
        target = f">= {r['target_gap']:.0f} ({'either frozen eval' if key != 'finetune' else 'finetune'}: {met})"
        lines.append(f"| {EVAL_TITLES[key]} | {r['pretrained']['mean']:.1f} ± {r['pretrained']['std']:.1f} | "
                     f"{r['random']['mean']:.1f} ± {r['random']['std']:.1f} | {r['gap']:+.1f} | {target} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> None:
    """One PNG: the test loss during pretraining against the trivial baselines, and the accuracies."""
    p = summary["pretext"]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for curve in p["curves"]:
        ax.plot(*zip(*curve), "-", color="black", alpha=0.3, lw=0.8)
    ax.plot(*zip(*p["curve"]), "o-", color="black", ms=3,
            label=f"pretraining, test clips (mean of {len(p['curves'])} seeds; thin: each)")
    for name, colour in zip(BASELINES, ("tab:red", "tab:orange", "tab:purple")):
        ax.axhline(p["baselines"][name], color=colour, ls="--", label=f"trivial: {name.replace('_', ' ')}")
    best = min(p["baselines"].values())
    ax.axhline(p["target_ratio"] * best, color="tab:green", ls=":", label=f"target: {p['target_ratio']} x best trivial")
    ax.set(xlabel="pretraining step", ylabel="masked-cube MSE (target space)", title="pretext loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    x = np.arange(len(EVALS))
    for offset, init, colour in ((-0.2, "pretrained", "tab:blue"), (0.2, "random", "tab:gray")):
        rows = [summary["downstream"][k][init] for k in EVALS]
        bars = ax.bar(x + offset, [r["mean"] for r in rows], 0.4, yerr=[r["std"] for r in rows], capsize=4,
                      color=colour, label=f"{init} init")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.axhline(summary["chance"], color="tab:red", ls="--", label="chance")
    ax.set_xticks(x, [EVAL_TITLES[k] for k in EVALS], fontsize=8)
    ax.set(ylabel="test top-1 % (mean ± std over seeds)", ylim=(0, 100),
           title=f"held-out clips, seeds {summary['setup']['seeds']}")
    ax.legend(fontsize=7)
    s = summary["setup"]
    fig.suptitle(f"eval_ssl: {s['train_clips']} train / {s['test_clips']} test clips of {s['clip']}, "
                 f"{s['few_labels']} labels for finetuning, seeds {s['seeds']}; {s['machine']}, "
                 f"{summary['seconds'] / 60:.1f} min", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict:
    """The whole evaluation (see the module docstring); writes the files and returns the summary."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # the caller's (the demo, a test session) is theirs


def _run(args: argparse.Namespace) -> dict:
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    with open(os.path.join(args.out, "log.txt"), "w") as log_file:
        def log(msg: str) -> None:
            line = f"[{time.perf_counter() - started:6.0f}s] {msg}"
            print(line, flush=True)
            log_file.write(line + "\n")

        train_clips, train_y = render_split(args, "train", args.train_per_class)
        test_clips, test_y = render_split(args, "test", args.test_per_class)
        train_x, test_x = to_input(train_clips), to_input(test_clips)
        train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
        log(f"rendered {len(train_x)} train / {len(test_x)} test {args.style} clips {tuple(train_x.shape[1:])}")

        eval_x = test_x[:args.eval_clips]
        # One set of test masks for every pretraining seed, so their curves and the baselines compare.
        reference = pretext_model(args)  # masks and baselines depend on the pretext, not the weights
        eval_mask = reference.draw_mask(eval_x, torch.Generator().manual_seed(args.data_seed))
        baselines = trivial_baselines(reference, eval_x, eval_mask)
        log(f"trivial baselines on {len(eval_x)} test clips: " + ", ".join(f"{k} {v:.4f}" for k, v in baselines.items()))
        pts = [pretrain(args, seed, train_x, eval_x, eval_mask, log) for seed in args.pt_seeds]
        encoders = [pt.pop("model").state_dict() for pt in pts]
        accuracies = {key: {init: [] for init in INITS} for key in EVALS}
        for init in INITS:
            for i, seed in enumerate(args.seeds):
                encoder = encoders[i % len(encoders)] if init == "pretrained" else None
                model = classifier(args, seed, encoder)
                train_f, test_f = (features(model, x, args.frozen_pool) for x in (train_x, test_x))
                accuracies["knn"][init].append(knn_accuracy(train_f, train_y, test_f, test_y, args.knn_k, args.classes))
                accuracies["linprobe"][init].append(linear_probe(train_f, train_y, test_f, test_y, args.classes, seed))
                few = few_labels(train_y, args.ft_fraction, args.classes, seed)
                accuracies["finetune"][init].append(finetune(args, model, train_x[few], train_y[few], test_x, test_y,
                                                             seed))
                log(f"{init} init, seed {seed}: " + ", ".join(
                    f"{key} {accuracies[key][init][-1] * 100:.1f}" for key in EVALS))
        summary = summarise(args, baselines, pts, accuracies, time.perf_counter() - started)
        table = markdown_table(summary)
        files = dict(json=os.path.join(args.out, "result.json"), table=os.path.join(args.out, "table.md"),
                     png=os.path.join(args.out, "eval_ssl.png"), log=os.path.join(args.out, "log.txt"))
        summary["files"] = files
        with open(files["table"], "w") as f:
            f.write(table)
        with open(files["json"], "w") as f:
            json.dump(summary, f, indent=1)
        plot(summary, files["png"])
        log("\n" + table + "".join(f"wrote {path}\n" for path in files.values()))
    return summary


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
