"""Clips per second delivered by the full data loader (decode + sampling + transforms + collate).

Runs the pretraining or finetuning training loader for each reader backend and num_sample and
prints a table: total clips/s and clips/s per worker (total / workers; with --workers 0 the
main process does the work). On a given list, or on a synthetic set rendered once into
--work-dir (default: K400-like 320x240 videos).

    python tools/benchmark_loader.py --workers 2 --num-sample 1 2 4
    python tools/benchmark_loader.py --list data_lists/k400/train.csv --data-root /data/k400 --mode train
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from video_mcmae import synthetic
from video_mcmae.cli import run_cli
from video_mcmae.config import Config
from video_mcmae.data.datasets import build_dataset, build_loader, set_epoch


def synthetic_list(work_dir: str, num_videos: int, num_frames: int, height: int, width: int):
    """(list path, data root) of a synthetic K400-layout set, rendered unless already there."""
    root = Path(work_dir) / f"synthetic_{num_videos}x{num_frames}_{height}x{width}"
    lst = root / "k400" / "train.csv"
    if not lst.exists():
        per_class = max(1, num_videos // 4)
        synthetic.make_dataset(root, num_classes=4, videos_per_class={"train": per_class, "val": 1, "test": 1},
                               num_frames=num_frames, height=height, width=width, layouts="k400")
    return str(lst), str(root / "k400")


def measure(cfg, mode: str, batches: int) -> dict:
    split = "pretrain" if mode == "pretrain" else "train"
    loader = build_loader(cfg, split, dataset=build_dataset(cfg, split))
    set_epoch(loader, 0)
    it = iter(loader)
    next(it)  # worker start-up and first decode are not throughput
    clips, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            set_epoch(loader, 1)
            it = iter(loader)
            batch = next(it)
        clips += (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[0]
    seconds = time.perf_counter() - start
    del it, loader
    return dict(clips=clips, seconds=seconds, clips_per_s=clips / seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", default="", help="training list (default: a synthetic set)")
    parser.add_argument("--data-root", default="")
    parser.add_argument("--dataset", default="k400", choices=["k400", "ssv2"])
    parser.add_argument("--mode", default="pretrain", choices=["pretrain", "train"],
                        help="pretrain: multi-scale crop; train: RandAugment + RRC + flip + erasing")
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav"])
    parser.add_argument("--num-sample", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per setting")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "video_mcmae_bench"))
    parser.add_argument("--synthetic-videos", type=int, default=8)
    parser.add_argument("--synthetic-frames", type=int, default=96)
    parser.add_argument("--synthetic-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_path, data_root = args.list, args.data_root
    else:
        list_path, data_root = synthetic_list(args.work_dir, args.synthetic_videos, args.synthetic_frames,
                                              *args.synthetic_size)
    cfg = Config()
    cfg.data.dataset, cfg.data.train_list, cfg.data.data_root = args.dataset, list_path, data_root
    cfg.data.num_workers, cfg.data.sampling_rate = args.workers, args.rate
    cfg.model.num_frames, cfg.model.img_size = args.frames, args.input_size
    cfg.data.short_side_size = max(cfg.data.short_side_size, args.input_size)
    cfg.optim.batch_size = args.batch_size
    workers = max(args.workers, 1)
    print(f"list {list_path} | mode {args.mode} | {args.frames}x{args.input_size}^2 clips | "
          f"batch {args.batch_size} videos | {args.workers} workers | {os.cpu_count()} CPUs")
    print(f"{'backend':8} {'num_sample':>10} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'clips/s/worker':>15}")
    for backend in args.backends:
        for ns in args.num_sample:
            cfg.data.reader, cfg.data.num_sample = backend, ns
            r = measure(cfg, args.mode, args.batches)
            print(f"{backend:8} {ns:>10} {r['clips']:>6} {r['seconds']:>8.2f} {r['clips_per_s']:>8.2f} "
                  f"{r['clips_per_s'] / workers:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
