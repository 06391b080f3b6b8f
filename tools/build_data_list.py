"""Write data lists (format: data_lists/README.md) from SSv2's json files or a folder per class.

Something-Something v2 (labels.json maps template -> id; train.json / validation.json hold
entries with `id` and `template`, whose `[something]` placeholders are normalised to `something`):

    python tools/build_data_list.py ssv2 --labels labels.json --split train.json \
        --video-dir videos --ext webm --out data_lists/ssv2/train.csv --class-names data_lists/ssv2/classes.txt

A folder per class (`<root>/<class>/**/<video>`; classes sorted by name get ids 0..K-1, or the
ids of an existing class-name file with --classes, so val uses the train ids):

    python tools/build_data_list.py folder --root /data/k400/train --out train.csv --class-names classes.txt
    python tools/build_data_list.py folder --root /data/k400/val --classes classes.txt --out val.csv
"""
import argparse
import json
import os
import re
import sys
from typing import List, Optional, Sequence, Tuple

from video_mcmae.cli import run_cli
from video_mcmae.data.lists import DataListError, read_class_names, write_class_names, write_list

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


def normalise_template(template: str) -> str:
    """'Putting [something] onto [something else]' -> 'Putting something onto something else'."""
    return re.sub(r"\[([^\]]*)\]", r"\1", template)


def _load_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataListError(f"json file not found: {path!r}") from None
    except json.JSONDecodeError as e:
        raise DataListError(f"{path}: not valid json ({e})") from None


def ssv2_entries(labels_json: str, split_json: str, video_dir: str = "", ext: str = "webm") -> Tuple[List[Tuple[str, int]], List[str]]:
    """(path, label) pairs for one SSv2 split and the class names ordered by id."""
    labels = _load_json(labels_json)
    if not isinstance(labels, dict):
        raise DataListError(f"{labels_json}: expected a mapping of template -> id")
    try:
        name_to_id = {name: int(i) for name, i in labels.items()}
    except (TypeError, ValueError):
        raise DataListError(f"{labels_json}: ids must be integers") from None
    ids = sorted(name_to_id.values())
    if ids != list(range(len(ids))):
        raise DataListError(f"{labels_json}: ids must be 0..{len(ids) - 1} without gaps")
    names = [None] * len(ids)
    for name, i in name_to_id.items():
        names[i] = name
    entries = []
    split = _load_json(split_json)
    if not isinstance(split, list):
        raise DataListError(f"{split_json}: expected a list of entries")
    for n, item in enumerate(split):
        if not isinstance(item, dict) or "id" not in item:
            raise DataListError(f"{split_json}: entry {n} has no 'id'")
        if "template" not in item:
            raise DataListError(f"{split_json}: entry {n} (id {item['id']}) has no 'template'; "
                                "SSv2's test.json is unlabeled and cannot make a labelled list")
        template = normalise_template(item["template"])
        if template not in name_to_id:
            raise DataListError(f"{split_json}: entry {n} (id {item['id']}): template {template!r} "
                                f"is not in {labels_json}")
        path = f"{item['id']}.{ext.lstrip('.')}"
        entries.append((os.path.join(video_dir, path) if video_dir else path, name_to_id[template]))
    return entries, names


def folder_entries(root: str, class_names: Optional[Sequence[str]] = None) -> Tuple[List[Tuple[str, int]], List[str]]:
    """(path relative to root, label) for every video under `root/<class>/`, sorted."""
    if not os.path.isdir(root):
        raise DataListError(f"folder not found: {root!r}")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not folders:
        raise DataListError(f"{root}: no class folders (expected <root>/<class>/<video>)")
    if class_names is None:
        class_names = folders
    ids = {name: i for i, name in enumerate(class_names)}
    unknown = [f for f in folders if f not in ids]
    if unknown:
        raise DataListError(f"{root}: class folders not in the class-name file: {unknown[:5]}")
    entries = []
    for name in folders:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.lower().endswith(VIDEO_EXTENSIONS):
                    rel = os.path.relpath(os.path.join(dirpath, fn), root)
                    entries.append((rel, ids[name]))
    if not entries:
        raise DataListError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in the class folders")
    return entries, list(class_names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    s = sub.add_parser("ssv2", help="from SSv2 labels.json + train.json/validation.json")
    s.add_argument("--labels", required=True, help="labels.json (template -> id)")
    s.add_argument("--split", required=True, help="train.json or validation.json")
    s.add_argument("--video-dir", default="", help="prefix joined to '<id>.<ext>' in the list")
    s.add_argument("--ext", default="webm", help="video file extension (webm; mp4 after re-encoding)")
    f = sub.add_parser("folder", help="from <root>/<class>/<video>")
    f.add_argument("--root", required=True)
    f.add_argument("--classes", default=None, help="existing class-name file giving the ids")
    for p in (s, f):
        p.add_argument("--out", required=True, help="list file to write")
        p.add_argument("--class-names", default=None, help="also write the class names here")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out or --class-names file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # An existing list is replaced only when asked, and before the scan (minutes on a large set).
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it, or choose another --out", file=sys.stderr)
        return 2
    # Class names fix the ids of every split's list: an existing file is replaced only when asked.
    if args.class_names and os.path.exists(args.class_names) and not args.overwrite:
        print(f"error: {args.class_names} exists; pass --overwrite to replace it, or choose another "
              "--class-names (folder lists reuse its ids with --classes)", file=sys.stderr)
        return 2
    try:
        if args.source == "ssv2":
            entries, names = ssv2_entries(args.labels, args.split, args.video_dir, args.ext)
        else:
            known = read_class_names(args.classes) if args.classes else None
            entries, names = folder_entries(args.root, known)
    except DataListError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    n = write_list(args.out, entries)
    print(f"wrote {n} samples of {len(names)} classes to {args.out}")
    if args.class_names:
        write_class_names(args.class_names, names)
        print(f"wrote {len(names)} class names to {args.class_names}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
