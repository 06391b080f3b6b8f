"""Write the synthetic labelled video set (see ``video_mcmae.synthetic``).

Example::

    python tools/make_synthetic_dataset.py out/synthetic --num-classes 8 --train 20 --val 4 --test 6
    python tools/make_synthetic_dataset.py out/scenes --num-classes 4 --scenes   # the demo's kind of video
"""

import argparse
import sys

from video_mcmae import synthetic
from video_mcmae.cli import run_cli
from video_mcmae.eval.protocol import PLAIN_STYLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="directory to write (gets k400/, ssv2/ and meta.json)")
    parser.add_argument("--num-classes", type=int, default=10,
                        help=f"even, {synthetic.MIN_CLASSES}..{synthetic.MAX_CLASSES}; the first N of: "
                             + ", ".join(synthetic.CLASS_NAMES))
    parser.add_argument("--train", type=int, default=16, help="videos per class in train")
    parser.add_argument("--val", type=int, default=4, help="videos per class in val")
    parser.add_argument("--test", type=int, default=6, help="videos per class in test")
    parser.add_argument("--frames", type=int, default=48, help="frames per video")
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", choices=("k400", "ssv2", "both"), default="both",
                        help="k400: H.264 .mp4 in class folders; ssv2: VP9 .webm by id")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing layout folders")
    parser.add_argument("--scenes", action="store_true",
                        help="render every video as a scene (one large object over a faint ramp background, a "
                             "small camera pan; video_mcmae.eval.protocol.PLAIN_STYLE): the moving object fills "
                             "most masked cubes, so masked pretraining has it to predict. Default: one object over "
                             "a flat background")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # make_dataset says what is wrong with its arguments in a ValueError
    return run_cli(lambda: _make(args), rank_errors=(ValueError,))


def _make(args: argparse.Namespace) -> None:
    ds = synthetic.make_dataset(
        args.out_dir, num_classes=args.num_classes,
        videos_per_class={"train": args.train, "val": args.val, "test": args.test},
        num_frames=args.frames, fps=args.fps, height=args.height, width=args.width, seed=args.seed,
        layouts=args.layouts, workers=args.workers, overwrite=args.overwrite,
        style=PLAIN_STYLE if args.scenes else None)
    kind = "scene videos" if args.scenes else "videos"
    print(f"wrote {ds.num_videos} {kind} x {len(ds.layouts)} layout(s) ({ds.num_frames} frames, "
          f"{ds.height}x{ds.width}, {len(ds.class_names)} classes) in {ds.seconds:.1f} s")
    for layout in ds.layouts:
        print(f"{layout}: data_root {ds.data_root(layout)}")
        print(f"  classes {ds.class_file(layout)}")
        for split in synthetic.SPLITS:
            print(f"  {split:5s} {ds.list_path(layout, split)}")
    print(f"metadata {ds.root / 'meta.json'}")


if __name__ == "__main__":
    sys.exit(main())
