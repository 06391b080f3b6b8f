"""Check every video of a data list and split it into a clean list and a quarantine list.

A video passes when it opens and its first and last frames decode with the reader training uses
(PyAV by default; --backend decord tries decord first and falls back to PyAV, as training does
with data.reader=decord). Writes, next to each other in --out-dir:

- `<name>.clean<ext>`: the readable samples, paths as written in the input list;
- `<name>.quarantine.tsv`: `path<TAB>reason` for each unreadable video.

    python tools/check_data_list.py data_lists/k400/train.csv --data-root /data/k400 --workers 8 --out-dir checked
"""
import argparse
import os
import sys

from video_mcmae.cli import run_cli
from video_mcmae.data.lists import read_list, write_list
from video_mcmae.data.readers import BACKENDS, DEFAULT_BACKEND, scan_videos


def check_list(list_path: str, data_root: str, out_dir: str, backend: str = DEFAULT_BACKEND,
               workers: int = 0, num_classes: int = None, progress: bool = True):
    """Returns (clean list path, quarantine path, number of bad videos)."""
    samples = read_list(list_path, num_classes)  # paths as written, for the clean list
    full = [os.path.join(data_root, s.path) if data_root and not os.path.isabs(s.path) else s.path
            for s in samples]
    bad = scan_videos(full, backend, workers, progress=progress)
    os.makedirs(out_dir, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(list_path))
    clean_path = os.path.join(out_dir, f"{stem}.clean{ext or '.csv'}")
    quarantine_path = os.path.join(out_dir, f"{stem}.quarantine.tsv")
    write_list(clean_path, [(s.path, s.label) for i, s in enumerate(samples) if i not in bad])
    with open(quarantine_path, "w", encoding="utf-8") as f:
        for i in sorted(bad):
            f.write(f"{samples[i].path}\t{bad[i]}\n")
    return clean_path, quarantine_path, len(bad)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("list", help="data list to check")
    parser.add_argument("--data-root", default="", help="joined to relative paths of the list")
    parser.add_argument("--out-dir", required=True, help="where the clean and quarantine lists go")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="checking processes (0: this one)")
    parser.add_argument("--num-classes", type=int, default=None, help="also check labels < this")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _check(args))


def _check(args: argparse.Namespace) -> None:
    clean, quarantine, num_bad = check_list(args.list, args.data_root, args.out_dir, args.backend,
                                            args.workers, args.num_classes, not args.no_progress)
    print(f"{num_bad} unreadable video(s) -> {quarantine}\nclean list -> {clean}")


if __name__ == "__main__":
    sys.exit(main())
