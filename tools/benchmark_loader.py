"""Data-loader speed per mode: decode and transform time per clip, bytes per clip handed to the
training step, clips/s one core delivers, and (optionally) the DataLoader's delivered clips/s.

Modes: `pretrain` (dense clips, multi-scale crop; the recipe decodes once for `num_sample` 2
clips) and `finetune` (the K400/SSv2 augmentation in the workers: RandAugment, random resized
crop, flip). Clips leave the workers as uint8 (C, T, H, W); normalisation and random erasing run
in the training step on the device and are not counted here. Component times are this process's
CPU time on one thread (torch and the video reader single-threaded, as in a DataLoader worker),
in interleaved repeats with medians, so they hold on a shared machine; a core delivers
1000 / (decode per video / num_sample + transform) clips/s. `--loader-batches N` also runs the
real DataLoader with `--workers` processes and reports wall-clock clips/s per worker (meaningful
on an otherwise idle machine).

On a given list, or on procedural videos rendered once into --work-dir at short side 320 and
encoded like tools/reencode_videos.py (H.264, preset veryfast, crf 23, tune fastdecode unless
--tune says otherwise: B-frames, one keyframe per 250 frames), 10 s at 25 fps like K400.

    python tools/benchmark_loader.py                          # both modes, the recipes' num_sample
    python tools/benchmark_loader.py --modes finetune --num-sample 1 2 --backends decord pyav
    python tools/benchmark_loader.py --list data_lists/k400/train.csv --data-root /data/k400 \\
        --workers 16 --loader-batches 50
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

from video_mcmae import synthetic
from video_mcmae.cli import run_cli
from video_mcmae.config import Config
from video_mcmae.data.factory import build_dataset, build_loader
from video_mcmae.data.loader import set_epoch
from video_mcmae.data.encoding import DEFAULT_TUNE, TUNES, x264_options
from video_mcmae.data.readers import open_video
from video_mcmae.data.sampling import sample_indices

MODES = {"pretrain": "pretrain", "finetune": "train"}  # mode -> dataset split
RECIPE_NUM_SAMPLE = {"pretrain": 2, "finetune": 1}


def encode_like_reencode(path: Path, frames, fps: int, tune: str = DEFAULT_TUNE) -> None:
    """H.264 with tools/reencode_videos.py's settings (video_mcmae.data.encoding, yuv420p)."""
    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(tune=tune)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def procedural_list(work_dir: str, num_videos: int, num_frames: int, height: int, width: int, fps: int,
                    tune: str = DEFAULT_TUNE):
    """(list path, data root) of procedural K400-like videos, rendered unless already there."""
    root = Path(work_dir) / f"procedural_{num_videos}x{num_frames}_{height}x{width}_{fps}fps_{tune}"
    lst = root / "train.csv"
    if not lst.exists():
        names = synthetic.class_names(4)
        lines = []
        for i in range(num_videos):
            label = i % len(names)
            rel = f"videos/{names[label]}_{i:03d}.mp4"
            (root / "videos").mkdir(parents=True, exist_ok=True)
            frames = synthetic.render_class(names[label], seed=0, num_frames=num_frames, height=height,
                                            width=width, index=i)
            encode_like_reencode(root / rel, frames, fps, tune)
            lines.append(f"{rel} {label}\n")
        lst.write_text("".join(lines))
    return str(lst), str(root)


def component_times(dataset, backend: str, sampling: str, num_frames: int, rate: int, num_sample: int,
                    clips: int, first: int) -> dict:
    """CPU seconds per decoded video and per transformed clip over `clips` items, and the bytes
    of one clip as the dataset hands it to the DataLoader."""
    decode = transform = 0.0
    nbytes = 0
    for i in range(first, first + clips):
        sample = dataset.samples[i % len(dataset.samples)]
        rng = random.Random(i)
        start = time.process_time()
        with open_video(sample.path, backend, fallback=False, num_threads=1) as reader:
            idx = sample_indices(sampling, "train", reader.num_frames, num_frames, rate, rng)[0]
            frames = reader.get_frames(idx)
        decoded = time.process_time()
        out = [dataset.transform(frames, rng) for _ in range(num_sample)]
        transform += time.process_time() - decoded
        decode += decoded - start
        nbytes = out[0].nbytes
    return dict(decode=decode / clips, transform=transform / (clips * num_sample), nbytes=nbytes)


def loader_rate(cfg, split: str, batches: int) -> float:
    """Delivered clips per second (wall clock) of the real DataLoader after its first batch."""
    loader = build_loader(cfg, split, dataset=build_dataset(cfg, split))
    set_epoch(loader, 0)
    it = iter(loader)
    next(it)  # worker start-up and first decode are not throughput
    clips, start = 0, time.perf_counter()
    for epoch in range(1, batches + 1):
        try:
            batch = next(it)
        except StopIteration:
            set_epoch(loader, epoch)
            it = iter(loader)
            batch = next(it)
        clips += (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[0]
    return clips / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", default="", help="training list (default: procedural videos)")
    parser.add_argument("--data-root", default="")
    parser.add_argument("--dataset", default="k400", choices=["k400", "ssv2"],
                        help="ssv2: segment sampling and no flips in finetuning")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav"], choices=["decord", "pyav"])
    parser.add_argument("--num-sample", nargs="+", type=int, default=None,
                        help="clips per decoded video (default: the recipes': pretrain 2, finetune 1)")
    parser.add_argument("--clips", type=int, default=12, help="videos per setting and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians reported)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--rand-augment", default=None, help="aug.rand_augment (default: the config's)")
    parser.add_argument("--interpolation", default=None, choices=["bilinear", "bicubic"],
                        help="aug.train_interpolation (default: the config's)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for --loader-batches")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per DataLoader batch")
    parser.add_argument("--loader-batches", type=int, default=0, help="timed DataLoader batches (0: skip)")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "video_mcmae_bench"))
    parser.add_argument("--synthetic-videos", type=int, default=8)
    parser.add_argument("--synthetic-frames", type=int, default=250)
    parser.add_argument("--synthetic-size", type=int, nargs=2, default=[320, 426], metavar=("H", "W"))
    parser.add_argument("--synthetic-fps", type=int, default=25)
    parser.add_argument("--tune", default=DEFAULT_TUNE, choices=TUNES,
                        help="x264 tune of the procedural videos (none: x264's default, as most downloaded footage)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.list:
        list_path, data_root = args.list, args.data_root
    else:
        list_path, data_root = procedural_list(args.work_dir, args.synthetic_videos, args.synthetic_frames,
                                               *args.synthetic_size, args.synthetic_fps, args.tune)
    cfg = Config()
    cfg.data.dataset, cfg.data.train_list, cfg.data.data_root = args.dataset, list_path, data_root
    cfg.data.num_workers, cfg.data.sampling_rate = args.workers, args.rate
    cfg.model.num_frames, cfg.model.img_size = args.frames, args.input_size
    cfg.data.short_side_size = max(cfg.data.short_side_size, args.input_size)
    cfg.optim.batch_size = args.batch_size
    if args.rand_augment is not None:
        cfg.aug.rand_augment = args.rand_augment
    if args.interpolation is not None:
        cfg.aug.train_interpolation = args.interpolation
    settings = [(mode, ns, backend) for mode in args.modes
                for ns in (args.num_sample or [RECIPE_NUM_SAMPLE[mode]]) for backend in args.backends]
    datasets = {mode: build_dataset(cfg, MODES[mode]) for mode in args.modes}
    times = {s: [] for s in settings}
    for repeat in range(args.repeats):  # interleaved: a load change on a shared machine hits all settings
        for mode, ns, backend in settings:
            sampling = "segment" if mode == "finetune" and args.dataset == "ssv2" else "dense"
            times[(mode, ns, backend)].append(component_times(
                datasets[mode], backend, sampling, args.frames, args.rate, ns, args.clips, repeat * args.clips))

    print(f"list {list_path} | {args.frames}x{args.input_size}^2 clips, rate {args.rate} | "
          f"RandAugment {cfg.aug.rand_augment!r} ({cfg.aug.train_interpolation}) | {os.cpu_count()} CPUs | "
          f"CPU ms per clip, median of {args.repeats} x {args.clips} videos")
    header = (f"{'mode':9} {'ns':>2} {'backend':7} {'decode/video':>12} {'decode/clip':>11} {'transform':>9} "
              f"{'total':>7} {'clips/s/core':>12} {'bytes/clip':>11}")
    if args.loader_batches:
        header += f" {'loader clips/s/worker':>21}"
    print(header)
    for mode, ns, backend in settings:
        runs = times[(mode, ns, backend)]
        decode = 1000 * statistics.median(r["decode"] for r in runs)
        transform = 1000 * statistics.median(r["transform"] for r in runs)
        total = decode / ns + transform
        line = (f"{mode:9} {ns:>2} {backend:7} {decode:>12.1f} {decode / ns:>11.1f} {transform:>9.1f} "
                f"{total:>7.1f} {1000 / total:>12.1f} {runs[0]['nbytes']:>11,d}")
        if args.loader_batches:
            cfg.data.reader, cfg.data.num_sample = backend, ns
            rate = loader_rate(cfg, MODES[mode], args.loader_batches)
            line += f" {rate / max(args.workers, 1):>21.1f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
