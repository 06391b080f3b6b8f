"""`tools/test_multiview.py` (the multi-view test, `engine.multiview.run_test`) and
`tools/merge_multiview.py` (the offline merge of its shards, `engine.multiview.merge_shards`)."""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from video_mcmae.config import load_config
from video_mcmae.engine.multiview.run import merge_shards, run_test
from video_mcmae.errors import MultiViewError

from .args import add_config_args, add_launcher_args
from .boundary import run_cli
from .environment import run_environment

# A merge error is raised on rank 0 only and a rank's own failure on that rank: the raising rank
# prints it (config and path errors hit every rank alike and are printed by rank 0).
RANK_ERRORS = (MultiViewError,)


def build_parser() -> argparse.ArgumentParser:
    parser = add_config_args(argparse.ArgumentParser(description="Multi-view test of a finetuned VideoConvViT"))
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="DeepSpeed checkpoint folder (tag folder, or run dir with 'latest') "
                             "or exported .safetensors")
    parser.add_argument("--output_dir", default="", help="shorthand for --opt test.output_dir=...")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output dir")
    return add_launcher_args(parser)


def _test(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    cfg = load_config(args.config, list(args.opt) + ([f"test.output_dir={args.output_dir}"] if args.output_dir else []))
    with run_environment(cfg.run):
        return run_test(cfg, args.checkpoint, args.overwrite)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _test(args), rank_errors=RANK_ERRORS)


def merge_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Merge the per-rank shards of a multi-view test offline")
    parser.add_argument("--shards", required=True, metavar="DIR", help="the `shards` folder of a test run")
    parser.add_argument("--output_dir", default="", help="where the report goes (default: the folder above DIR)")
    parser.add_argument("--average", choices=("softmax", "logits"), default="",
                        help="merge rule (default: the run's test.average)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output dir")
    args = parser.parse_args(argv)
    return run_cli(lambda: merge_shards(args.shards, args.output_dir, args.average, args.overwrite),
                   rank_errors=RANK_ERRORS)
