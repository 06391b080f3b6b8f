"""Command-line arguments shared by the tools: the run config (`--config`, `--opt`) and a
training run's start (`--resume`, `--auto_resume`, `--output_dir`)."""
from __future__ import annotations

import argparse
from typing import List, Sequence

from video_mcmae.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument(
        "--opt", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --opt optim.epochs=10 (repeatable; value parsed as YAML)",
    )
    return parser


def add_launcher_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # The deepspeed launcher passes --local_rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)
    return parser


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_config_args(parser)
    parser.add_argument("--resume", default="", metavar="PATH",
                        help="checkpoint tag folder (output/epoch-0005) or output dir (uses its 'latest')")
    parser.add_argument("--auto_resume", action="store_true",
                        help="resume the newest complete checkpoint in run.output_dir, if any")
    parser.add_argument("--output_dir", default="", help="shorthand for --opt run.output_dir=...")
    return add_launcher_args(parser)


def config_from_args(args: argparse.Namespace, extra_opts: Sequence[str] = ()) -> Config:
    """The config of `--config` with the `--opt` overrides, then `extra_opts` (a tool's shorthands)
    and `--output_dir` (as run.output_dir)."""
    opts: List[str] = list(args.opt) + list(extra_opts)
    if args.output_dir:
        opts.append(f"run.output_dir={args.output_dir}")
    return load_config(args.config, opts)
