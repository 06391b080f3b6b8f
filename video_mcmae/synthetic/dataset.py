"""Writing the procedural set to disk as real encoded videos with data lists.

Layout written by ``make_dataset(out_dir, ...)``::

    out_dir/meta.json                                  options, class names, relations
    out_dir/k400/classes.txt                           class name of label i on line i
    out_dir/k400/{train,val,test}.csv                  "videos/<split>/<class>/<split>_<n>.mp4 <label>"
    out_dir/k400/videos/<split>/<class>/<split>_<n>.mp4    H.264
    out_dir/ssv2/classes.txt
    out_dir/ssv2/{train,val,test}.csv                  "videos/<id>.webm <label>"
    out_dir/ssv2/videos/<id>.webm                      VP9

List paths are relative to the layout directory (``out_dir/k400`` or ``out_dir/ssv2``): pass
that directory as the list's ``data_root``. Both layouts hold the same rendered videos, only the
container, codec and naming differ.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .classes import check_class, class_names, hflip_class, time_reverse_class
from .encode import encode_video
from .params import SPLITS, check_geometry, sample_params, video_rng
from .render import render_video
from .scenes import SceneStyle, render_scene, sample_scene

# Layout name -> codec of its files (see encode_video).
LAYOUTS: Dict[str, str] = {"k400": "h264", "ssv2": "vp9"}
CLASS_FILE = "classes.txt"


@dataclass(frozen=True)
class SyntheticDataset:
    """What ``make_dataset`` wrote. List paths are relative to ``data_root(layout)``."""

    root: Path
    class_names: Tuple[str, ...]
    layouts: Tuple[str, ...]
    videos_per_class: Dict[str, int]
    num_frames: int
    fps: int
    height: int
    width: int
    num_videos: int  # rendered videos; each is written once per layout
    seconds: float

    def data_root(self, layout: str) -> Path:
        return self.root / layout

    def list_path(self, layout: str, split: str) -> Path:
        return self.root / layout / f"{split}.csv"

    def class_file(self, layout: str) -> Path:
        return self.root / layout / CLASS_FILE


def render_class(class_name: str, seed: int, num_frames: int = 48, height: int = 128,
                 width: int = 128, split: str = "train", index: int = 0,
                 style: Optional[SceneStyle] = None) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of the video that ``make_dataset(seed=seed, style=style)``
    writes for ``class_name``, ``split`` and ``index`` (before encoding)."""
    rng = video_rng(seed, split, check_class(class_name), index)
    if style is not None:
        return render_scene(sample_scene(class_name, rng, num_frames, height, width, style))
    return render_video(sample_params(class_name, rng, num_frames, height, width))


def video_relpath(layout: str, split: str, label: int, index: int, names: Sequence[str]) -> str:
    """Path of one video relative to its layout directory."""
    if layout == "k400":
        return f"videos/{split}/{names[label]}/{split}_{index:05d}.mp4"
    # SSv2 names videos by a number; this one encodes (split, label, index) so it is stable.
    return f"videos/{SPLITS.index(split) + 1}{label:02d}{index:05d}.webm"


def _write_one(job: tuple) -> None:
    seed, split, index, name, num_frames, height, width, fps, style, outputs = job
    frames = render_class(name, seed, num_frames, height, width, split, index, style)
    for codec, path in outputs:
        encode_video(path, frames, codec, fps)


def _resolve_counts(videos_per_class: Union[int, Mapping[str, int]]) -> Dict[str, int]:
    if isinstance(videos_per_class, Mapping):
        unknown = set(videos_per_class) - set(SPLITS)
        if unknown or set(videos_per_class) != set(SPLITS):
            raise ValueError(f"videos_per_class={dict(videos_per_class)!r}: give a count for each of "
                             f"{', '.join(SPLITS)} (or one int for all)")
        counts = {s: videos_per_class[s] for s in SPLITS}
    else:
        counts = {s: videos_per_class for s in SPLITS}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= 99999:
            raise ValueError(f"videos per class for {split!r} is {n!r}: need an integer from 1 to 99999")
    return {s: int(n) for s, n in counts.items()}


def _resolve_layouts(layouts: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    chosen = tuple(LAYOUTS) if layouts == "both" else (layouts,) if isinstance(layouts, str) else tuple(layouts)
    bad = [x for x in chosen if x not in LAYOUTS]
    if bad or not chosen:
        raise ValueError(f"layouts={layouts!r}: choose 'k400', 'ssv2' or 'both'")
    return tuple(dict.fromkeys(chosen))


def make_dataset(out_dir: Union[str, Path], *, num_classes: int = 10,
                 videos_per_class: Optional[Union[int, Mapping[str, int]]] = None, num_frames: int = 48,
                 fps: int = 16, height: int = 128, width: int = 128, seed: int = 0,
                 layouts: Union[str, Iterable[str]] = "both", workers: Optional[int] = None,
                 overwrite: bool = False, style: Optional[SceneStyle] = None) -> SyntheticDataset:
    """Render and encode the synthetic set under ``out_dir`` (layout in the module docstring).

    ``videos_per_class`` is one int for every split or ``{"train": n, "val": n, "test": n}``
    (default 16/4/6). Video (split, label, index) depends only on ``seed`` and those three, so
    changing counts adds or drops videos without changing the others. ``workers`` processes
    render and encode (default: up to 2). ``style``: render every video as a scene of that style
    (``scenes.render_scene``, same labels) instead of one object over a flat background. A call owns ``out_dir``: existing layout folders or
    ``meta.json`` there are an error unless ``overwrite``, which deletes them all first.
    """
    started = time.perf_counter()
    names = class_names(num_classes)
    counts = _resolve_counts({"train": 16, "val": 4, "test": 6} if videos_per_class is None else videos_per_class)
    chosen = _resolve_layouts(layouts)
    check_geometry(num_frames, height, width)
    if not isinstance(fps, (int, np.integer)) or not 1 <= fps <= 240:
        raise ValueError(f"fps={fps!r}: need an integer from 1 to 240")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: need a non-negative integer")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if style is not None and not isinstance(style, SceneStyle):
        raise ValueError(f"style={style!r}: need a SceneStyle or None")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: need an integer >= 1")

    root = Path(out_dir)
    # One call owns the whole root, so meta.json always describes every layout folder in it.
    existing = [root / x for x in (*LAYOUTS, "meta.json") if (root / x).exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists; choose another out_dir or pass overwrite=True "
                         "(--overwrite) to replace it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    jobs, lines = [], {(x, s): [] for x in chosen for s in SPLITS}
    for split in SPLITS:
        # Index-major order, so any prefix of a list is class-balanced.
        for index in range(counts[split]):
            for label, name in enumerate(names):
                outputs = []
                for layout in chosen:
                    rel = video_relpath(layout, split, label, index, names)
                    lines[layout, split].append(f"{rel} {label}\n")
                    outputs.append((LAYOUTS[layout], str(root / layout / rel)))
                jobs.append((int(seed), split, index, name, num_frames, height, width, int(fps), style, outputs))

    if workers > 1 and len(jobs) > 2 * workers:
        with multiprocessing.get_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _write_one(job)

    for layout in chosen:
        (root / layout / CLASS_FILE).write_text("".join(f"{n}\n" for n in names))
        for split in SPLITS:
            (root / layout / f"{split}.csv").write_text("".join(lines[layout, split]))
    meta = dict(
        class_names=list(names), time_reverse={n: time_reverse_class(n) for n in names},
        hflip={n: hflip_class(n) for n in names}, videos_per_class=counts, num_frames=num_frames,
        fps=int(fps), height=height, width=width, seed=int(seed), layouts=list(chosen),
        list_paths="relative to the layout directory (out_dir/<layout>)")
    if style is not None:
        meta["scene_style"] = dataclasses.asdict(style)
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SyntheticDataset(root=root, class_names=names, layouts=chosen, videos_per_class=counts,
                            num_frames=int(num_frames), fps=int(fps), height=int(height), width=int(width),
                            num_videos=len(jobs), seconds=time.perf_counter() - started)
