"""Merge the per-rank shards of a multi-view test offline (e.g. after a rank was re-run) and
write the report again.

    python tools/merge_multiview.py --shards output/ft_k400/test/shards [--average logits] [--output_dir DIR]
"""
import sys

from video_mcmae.cli.multiview import merge_main

if __name__ == "__main__":
    sys.exit(merge_main())
