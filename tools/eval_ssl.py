"""Does masked-autoencoder pretraining give a better video encoder than a random initialisation
given the same tuning? The protocol (`video_mcmae.eval.protocol`, docs/ssl_evaluation.md) on
procedural clips: pretraining on an unlabelled pool, then for both initialisations frozen probes
(k-NN, BatchNorm linear, attentive) and finetuning at several label budgets, every choice made on a
validation split and the test split read once per reported number.

Writes <out>/result.json (every number, selection and timing), <out>/table.md, <out>/eval_ssl.png
(pretext curves, label-efficiency curve, frozen probes) and <out>/log.txt. With --validation-only
it runs the protocol's validation half (pretraining, frozen probes, the finetuning lr search with
downstream seed 0), the way settings are chosen, and writes <out>/selection.json and <out>/log.txt;
the test split is never rendered.

Every finished training is kept in <out>/runs/ as it ends; after a stop (Ctrl-C, a kill, a
machine that went away) the same command with --resume goes on from there, and gives the numbers
an uninterrupted run gives.

    python tools/eval_ssl.py --out output/eval_ssl            # default size (about 3.3 h on 2 CPU cores, estimated)
    python tools/eval_ssl.py --quick --out /tmp/eval_ssl      # plumbing only, seconds
    python tools/eval_ssl.py --validation-only --pt-seeds 0 --budgets 0.1 --out output/select
    python tools/eval_ssl.py --out output/eval_ssl --resume   # go on after a stop
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import typing
from typing import Sequence

from video_mcmae.cli import run_cli
from video_mcmae.config import ConfigError, parse_typed
from video_mcmae.eval import report
from video_mcmae.eval.protocol import QUICK, EvalConfig, run_protocol, run_selection
from video_mcmae.eval.records import finished
from video_mcmae.paths import check_writable
from video_mcmae.run_lock import lock_folder
from video_mcmae.synthetic import CLASS_NAMES, MAX_CLASSES, MIN_CLASSES, class_names
from video_mcmae.synthetic.scenes import SceneStyle

RECORDS = "runs"


def build_parser() -> argparse.ArgumentParser:
    # Flags left out keep the configuration's value (the default size's, or --quick's).
    d = EvalConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/eval_ssl",
                   help=f"output folder (created; its four files are replaced; finished trainings go to <out>/{RECORDS}/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes that check the plumbing, not the numbers")
    p.add_argument("--resume", action="store_true",
                   help=f"go on from the trainings a stopped run with the same flags kept in <out>/{RECORDS}/")
    p.add_argument("--validation-only", action="store_true",
                   help="only the validation half (for choosing settings); the test split is never rendered")
    p.add_argument("--workers", type=int, help=f"processes running independent trainings (default {d.workers})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (1: on a 2-core machine two threads per process ran slower)")
    p.add_argument("--pt-seeds", type=int, nargs="+", help=f"pretraining seeds (default {list(d.pt_seeds)})")
    p.add_argument("--seeds", type=int, nargs="+",
                   help=f"downstream seeds (label subset, head init, batch order); seed i uses pretraining seed i "
                        f"(default {list(d.seeds)})")
    p.add_argument("--budgets", type=float, nargs="+",
                   help=f"label budgets, as fractions of the pool's labels (default {list(d.budgets)})")
    p.add_argument("--pt-steps", type=int, help=f"pretraining steps (default {d.pretrain.steps})")
    p.add_argument("--ft-steps", type=int,
                   help=f"finetuning's most steps, the cosine's length (default {d.finetune.max_steps}; early stopping "
                        f"after {d.finetune.patience} validations without a new best)")
    p.add_argument("--classes", type=int,
                   help=f"classes, the first ones of the procedural catalogue ({', '.join(CLASS_NAMES[:6])}, "
                        f"...): an even number from {MIN_CLASSES} to {MAX_CLASSES}; the splits keep their sizes "
                        f"({d.classes * d.pool_per_class} / {d.classes * d.val_per_class} / "
                        f"{d.classes * d.test_per_class} clips at least), shared among them (default {d.classes})")
    p.add_argument("--size", type=int, help=f"clip height and width in pixels, a multiple of 16 (default {d.size})")
    p.add_argument("--decoder-mask-ratio", type=float, default=0.0,
                   help="share of the encoder-masked cubes the decoder drops (model.decoder_mask_ratio)")
    p.add_argument("--probe-layer", help=f"the attentive probe's layer: stage2, block<k>, stage3 (default {d.probe_layer})")
    p.add_argument("--ft-lrs", type=float, nargs="+",
                   help=f"the finetuning lr search's values, the same for both inits (default {list(d.ft_lrs)})")
    p.add_argument("--scene", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the scenes' style (repeatable; the value is read as YAML, "
                        "null clears an optional field): "
                        + ", ".join(f"{f.name} (default {getattr(d.style, f.name)})"
                                    for f in dataclasses.fields(SceneStyle)))
    return p


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def scene_style(base: SceneStyle, items: Sequence[str]) -> SceneStyle:
    """`base` with each `--scene KEY=VALUE` applied; a value is read like a config override's and
    takes the field's declared type (`null` clears an optional field)."""
    hints = typing.get_type_hints(SceneStyle)
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in hints:
            raise ConfigError(f"--scene {item}: need KEY=VALUE with KEY one of {', '.join(hints)}")
        changes[key] = parse_typed(text, hints[key], f"--scene {item}")
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise ConfigError(f"--{err}") from None  # SceneStyle's message names the field as "scene KEY=VALUE"


def _with_classes(base: EvalConfig, classes: int) -> EvalConfig:
    """`classes` classes sharing `base`'s split sizes, rounded up so that no split shrinks."""
    def share(per_class: int) -> int:
        return math.ceil(per_class * base.classes / classes)

    return dataclasses.replace(base, classes=classes, pool_per_class=share(base.pool_per_class),
                               val_per_class=share(base.val_per_class), test_per_class=share(base.test_per_class))


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    base = dataclasses.replace(EvalConfig(), **QUICK) if args.quick else EvalConfig()
    for lr in args.ft_lrs or ():
        if not lr > 0:
            raise ConfigError(f"--ft-lrs {lr:g}: a learning rate is a number > 0")
    for budget in args.budgets or ():
        if not 0 < budget <= 1:
            raise ConfigError(f"--budgets {budget:g}: a label budget is a fraction of the pool in (0, 1]")
    if not 0 <= args.decoder_mask_ratio < 1:
        raise ConfigError(f"--decoder-mask-ratio {args.decoder_mask_ratio:g}: need a number in [0, 1)")
    for flag, value in (("--pt-steps", args.pt_steps), ("--ft-steps", args.ft_steps), ("--workers", args.workers),
                        ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: need a whole number >= 1")
    if args.size is not None and (args.size < 32 or args.size % 16):
        raise ConfigError(f"--size {args.size}: need a multiple of 16 from 32 (the encoder's 1/16 grid)")
    if args.classes is not None:
        try:
            class_names(args.classes)
        except ValueError as err:
            raise ConfigError(f"--classes: {err}") from None
        base = _with_classes(base, args.classes)
    given = dict(workers=args.workers, probe_layer=args.probe_layer, size=args.size,
                 pt_seeds=args.pt_seeds and tuple(args.pt_seeds), seeds=args.seeds and tuple(args.seeds),
                 budgets=args.budgets and tuple(args.budgets), ft_lrs=args.ft_lrs and tuple(args.ft_lrs),
                 style=scene_style(base.style, args.scene) if args.scene else None,
                 pretrain=args.pt_steps and dataclasses.replace(base.pretrain, steps=args.pt_steps),
                 finetune=args.ft_steps and dataclasses.replace(base.finetune, max_steps=args.ft_steps))
    cfg = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    if args.decoder_mask_ratio:
        cfg = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "decoder_mask_ratio": args.decoder_mask_ratio})
    return dataclasses.replace(cfg, matched_budgets=tuple(b for b in cfg.matched_budgets if b in cfg.budgets))


def run(args: argparse.Namespace) -> dict:
    """The protocol (or its validation half) at the configured size; writes its files and returns the result."""
    cfg = config_from_args(args)
    check_writable(args.out, "--out")  # before an hour of work, not at its end
    with lock_folder(args.out, "--out"):
        return _run_locked(args, cfg)


def _run_locked(args: argparse.Namespace, cfg: EvalConfig) -> dict:
    records = os.path.join(args.out, RECORDS)
    if not args.resume and finished(records):
        raise ConfigError(f"--out {args.out} holds the trainings of an earlier run ({records}): add --resume to go "
                          "on from them (same flags), or choose another --out")
    started = time.perf_counter()
    if args.validation_only:
        files = dict(json=os.path.join(args.out, "selection.json"), log=os.path.join(args.out, "log.txt"))
    else:
        files = dict(json=os.path.join(args.out, "result.json"), table=os.path.join(args.out, "table.md"),
                     png=os.path.join(args.out, "eval_ssl.png"), log=os.path.join(args.out, "log.txt"))
    with open(files["log"], "a" if args.resume else "w") as log_file:
        def log(msg: str) -> None:
            line = f"[{time.perf_counter() - started:6.0f}s] {msg}"
            print(line, flush=True)
            log_file.write(line + "\n")
            log_file.flush()

        if args.validation_only:
            result = run_selection(cfg, log, threads=args.threads, records=records)
        else:
            result = run_protocol(cfg, log, threads=args.threads, records=records)
            result["targets"] = report.targets(result)
            result["machine"] = f"{os.cpu_count()} CPU cores, {cfg.workers} workers x {args.threads} torch threads"
            table = report.markdown(result, quick=args.quick)
            with open(files["table"], "w") as f:
                f.write(table)
            report.plot(result, files["png"])
            log("\n" + table)
        with open(files["json"], "w") as f:
            json.dump(result, f, indent=1)
        log("".join(f"wrote {path}\n" for path in files.values()))
    result["files"] = files
    return result


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
