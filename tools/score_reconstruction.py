"""Pretrain a VideoConvMAE in process on procedural scenes and score how much of the moving object it
draws inside masked cubes (`video_mcmae.eval.reconstruction`): its colour (1 = not at all, 0 =
exactly) and its shape (below 1: the edge is placed better than each cube's flat colour). With
--weights it scores an exported pretraining model instead (the demo scores its own that way).

The scenes are the demo's (`video_mcmae.eval.protocol.PLAIN_STYLE`: one large object over a faint
ramp) unless a flag changes them; the pretext is the evaluation's (raw-pixel target, tube masks
0.75, a decoder 64 wide with 2 blocks) unless a flag changes it. Training clips and validation clips
come from disjoint seeds; the score and the loss are on the validation clips with one fixed mask.
docs/demo.md lists what was measured with it.

    python tools/score_reconstruction.py                                   # the demo's pretext, 600 steps
    python tools/score_reconstruction.py --mask-type random --mask-ratio 0.25 --steps 1000
    python tools/score_reconstruction.py --texture solid --object-scale 3 --decoder-width 256
    python tools/score_reconstruction.py --weights output/demo/weights/pretrained.safetensors
    python tools/score_reconstruction.py --quick                           # plumbing only, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Sequence

import timm
import torch

from video_mcmae import api
from video_mcmae.cli import run_cli
from video_mcmae.config import IMAGENET_MEAN, IMAGENET_STD, ConfigError
from video_mcmae.eval.data import render_backgrounds, render_clips, to_input
from video_mcmae.eval.pretrain import PretrainRecipe, fixed_mask, masked_loss, pretrain
from video_mcmae.eval.protocol import DEFAULT_PRETEXT, PLAIN_STYLE
from video_mcmae.eval.reconstruction import score_objects, verdict
from video_mcmae.models import is_pretraining
from video_mcmae.models.masking import MASK_TYPES
from video_mcmae.paths import write_atomic
from video_mcmae.synthetic import class_names
from video_mcmae.synthetic.render import SHAPES, TEXTURES

# The flags that shape the pretraining; with --weights the model is scored as exported, so they are refused.
PRETRAINING = dict(steps=600, lr=1.5e-3, batch=16, train_per_class=60, size=48, seed=0,  # the demo's steps and scenes
                   mask_type=DEFAULT_PRETEXT["mask_type"], mask_ratio=DEFAULT_PRETEXT["mask_ratio"],
                   decoder_width=DEFAULT_PRETEXT["decoder_embed_dim"], decoder_depth=DEFAULT_PRETEXT["decoder_depth"],
                   decoder_heads=DEFAULT_PRETEXT["decoder_num_heads"])
DEFAULTS = dict(PRETRAINING, val_per_class=16)
QUICK = dict(steps=4, train_per_class=2, val_per_class=2)
MASK_SEED = 1001  # the validation clips' fixed mask


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="score this pretraining model (an export or checkpoint) as it is instead of "
                                     "pretraining one (the pretraining flags are refused with it)")
    p.add_argument("--out", help="also write the summary to this JSON file")
    p.add_argument("--steps", type=int, help="pretraining steps (default 600, the demo's)")
    p.add_argument("--lr", type=float, help="peak lr of the cosine schedule (default 1.5e-3)")
    p.add_argument("--batch", type=int, help="clips per step (default 16)")
    p.add_argument("--train-per-class", type=int, help="training scenes per class (default 60, the demo's)")
    p.add_argument("--val-per-class", type=int, help="validation scenes per class (default 16)")
    p.add_argument("--size", type=int, help="clip height and width, a multiple of 16 (default 48)")
    p.add_argument("--mask-type", choices=MASK_TYPES, help=f"(default {PRETRAINING['mask_type']})")
    p.add_argument("--mask-ratio", type=float, help=f"(default {PRETRAINING['mask_ratio']:g})")
    p.add_argument("--decoder-width", type=int, help=f"(default {PRETRAINING['decoder_width']})")
    p.add_argument("--decoder-depth", type=int, help=f"(default {PRETRAINING['decoder_depth']})")
    p.add_argument("--decoder-heads", type=int, help=f"(default {PRETRAINING['decoder_heads']})")
    p.add_argument("--texture", choices=TEXTURES, help="every object's texture (default: each object's own)")
    p.add_argument("--shape", choices=SHAPES, help="every object's shape (default: each object's own)")
    p.add_argument("--object-scale", type=float, default=PLAIN_STYLE.object_scale,
                   help=f"object radius relative to the generator's (default {PLAIN_STYLE.object_scale:g})")
    p.add_argument("--seed", type=int, help="the model's init and the batches' draws (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes that check the plumbing, not the numbers")
    return p


def check_args(args: argparse.Namespace) -> None:
    for flag in ("steps", "batch", "train_per_class", "val_per_class", "threads", "decoder_depth", "decoder_heads"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: need a whole number >= 1")
    if not 0 < args.mask_ratio < 1:
        raise ConfigError(f"--mask-ratio {args.mask_ratio:g}: need a fraction in (0, 1)")
    if args.size < 32 or args.size % 16:
        raise ConfigError(f"--size {args.size}: need a multiple of 16 from 32 (the encoder's 1/16 grid)")
    if args.decoder_width % args.decoder_heads or args.decoder_width % 16:
        raise ConfigError(f"--decoder-width {args.decoder_width}: need a multiple of 16 and of --decoder-heads "
                          f"({args.decoder_heads})")
    if not args.lr > 0:
        raise ConfigError(f"--lr {args.lr:g}: need a number > 0")


def run(args: argparse.Namespace) -> dict:
    given = [k for k in PRETRAINING if getattr(args, k) is not None]
    if args.weights and given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ConfigError(f"--weights scores the model as it was exported; {flags} shape a pretraining run: leave "
                          "them out")
    defaults = {**DEFAULTS, **QUICK} if args.quick else DEFAULTS
    args = argparse.Namespace(**{**vars(args), **{k: v for k, v in defaults.items() if getattr(args, k) is None}})
    check_args(args)
    try:
        style = dataclasses.replace(PLAIN_STYLE, texture=args.texture, shape=args.shape, object_scale=args.object_scale)
    except ValueError as e:
        raise ConfigError(f"{e} (--object-scale)") from None
    names = class_names(4)
    loaded = _load(args.weights) if args.weights else None
    frames, size = api.input_geometry(loaded.model) if loaded else (8, args.size)
    val = render_clips(names, "val", args.val_per_class, frames, size, style)
    backgrounds = render_backgrounds(names, "val", args.val_per_class, frames, size, style)
    started = time.perf_counter()
    if loaded:
        model = loaded.model
        mask = fixed_mask(model, val, MASK_SEED)
        summary = dict(weights=args.weights, validation_loss=round(masked_loss(model, val, mask), 5))
    else:
        model, mask, summary = _pretrain(args, names, style, val)
    model.eval()
    with torch.no_grad():
        trivial = {k: float(v) for k, v in model.trivial_baselines(to_input(val.clips), mask).items()}
    score = score_objects(model, val, backgrounds, mask)
    summary.update(seconds=round(time.perf_counter() - started, 1), validation_clips=len(val),
                   trivial={k: round(v, 5) for k, v in trivial.items()},
                   object_fraction=round(score.object_fraction, 3), error_ratio=round(score.error_ratio, 3),
                   edge_cubes=score.edge_cubes, shape_ratio=round(score.shape_ratio, 3), verdict=verdict(score))
    if args.out:
        write_atomic(args.out, lambda f: f.write(json.dumps(summary, indent=2).encode("utf-8")))
    print(json.dumps(summary), flush=True)
    print(f"object pixels are {score.object_fraction:.0%} of the masked pixels; error ratio there "
          f"{score.error_ratio:.3f} (1: the object is not drawn, 0: drawn exactly); in the {score.edge_cubes} masked "
          f"cubes its edge crosses, shape ratio {score.shape_ratio:.3f} (below 1: the edge is placed better than "
          f"each cube's flat colour) -> {summary['verdict']}", flush=True)
    return summary


def _load(weights: str) -> api.LoadedModel:
    loaded = api.load(weights)
    if not is_pretraining(loaded.model):
        raise ConfigError(f"--weights {weights}: {loaded.preset} is a classifier; scoring reconstructions needs "
                          "a pretraining model (a videoconvmae_* export or checkpoint)")
    if list(loaded.settings.mean) != list(IMAGENET_MEAN) or list(loaded.settings.std) != list(IMAGENET_STD):
        raise ConfigError(f"--weights {weights}: trained with data.mean/std {loaded.settings.mean}/"
                          f"{loaded.settings.std}; the procedural clips are fed with ImageNet's")
    return loaded


def _pretrain(args: argparse.Namespace, names, style, val):
    train = render_clips(names, "train", args.train_per_class, 8, args.size, style)
    torch.manual_seed(args.seed)
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=8, img_size=args.size,
                              norm_pix_loss=DEFAULT_PRETEXT["norm_pix_loss"], mask_type=args.mask_type,
                              mask_ratio=args.mask_ratio, decoder_embed_dim=args.decoder_width,
                              decoder_depth=args.decoder_depth, decoder_num_heads=args.decoder_heads)
    mask = fixed_mask(model, val, MASK_SEED)
    result = pretrain(model, train, PretrainRecipe(steps=args.steps, lr=args.lr, batch=args.batch,
                                                   eval_every=max(args.steps // 4, 1)), args.seed, val, mask)
    return model, mask, dict(steps=args.steps, validation_loss=[(step, round(loss, 5)) for step, loss in result.curve])


def main(argv: Sequence[str] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads >= 1:  # a bad value is refused by `check_args`, inside `run_cli`
        torch.set_num_threads(args.threads)
    return run_cli(lambda: run(args) and 0)


if __name__ == "__main__":
    sys.exit(main())
