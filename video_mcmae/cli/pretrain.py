"""`tools/run_pretrain.py`: masked-autoencoder pretraining (`engine.pretrain.run_pretrain`)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from video_mcmae.engine.pretrain import run_pretrain
from video_mcmae.engine.trainer import Run

from .args import add_run_args, config_from_args
from .boundary import run_cli
from .environment import run_environment


def build_parser() -> argparse.ArgumentParser:
    return add_run_args(argparse.ArgumentParser(description="VideoConvMAE pretraining (DeepSpeed)"))


def _pretrain(args: argparse.Namespace) -> Run:
    cfg = config_from_args(args)
    with run_environment(cfg.run):
        return run_pretrain(cfg, args.resume, args.auto_resume)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _pretrain(args))
