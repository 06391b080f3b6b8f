"""`tools/run_finetune.py`: finetuning, linear probing and validation (`engine.finetune.run_finetune`)."""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional

from video_mcmae.engine.finetune import run_finetune

from .args import add_run_args, config_from_args
from .boundary import run_cli
from .environment import run_environment


def build_parser() -> argparse.ArgumentParser:
    parser = add_run_args(argparse.ArgumentParser(description="VideoConvViT finetuning (DeepSpeed)"))
    parser.add_argument("--data", choices=("k400", "ssv2", "image"), default=None,
                        help="dataset kind (sampling, flip rule); shorthand for --opt data.dataset=...")
    parser.add_argument("--finetune", default="", metavar="WEIGHTS",
                        help="initial weights: pretraining checkpoint folder, exported .safetensors or .pth")
    parser.add_argument("--linprobe", action="store_true", help="train only a BatchNorm + linear head on the frozen encoder")
    parser.add_argument("--eval", action="store_true", help="only validate the given weights (never auto-resumes)")
    return parser


def _finetune(args: argparse.Namespace) -> Dict[str, float]:
    cfg = config_from_args(args, [f"data.dataset={args.data}"] if args.data else [])
    with run_environment(cfg.run):
        return run_finetune(cfg, args.finetune, args.resume, args.auto_resume, args.linprobe, args.eval)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _finetune(args))
