"""Data lists: one `<path> <label>` sample per line (format: data_lists/README.md).

The separator is one or more spaces, a tab, or a comma (spaces around a comma or tab are
allowed). A path may contain spaces only when the separator is a tab or a comma. Blank lines are
skipped; every other malformed line is a `DataListError` naming `file:line`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from video_mcmae.errors import DataListError

# Shortest path first, so the label is the last field; the label never holds spaces or commas.
_LINE = re.compile(r"(?P<path>.+?)(?P<sep>[ ]*[\t,][ \t]*|[ ]+)(?P<label>[^\s,]+)")


def _read_lines(path: str) -> List[str]:
    """The file's lines as UTF-8 text; a leading byte-order mark is dropped (editors on Windows
    write one) and undecodable bytes are refused with the line they are on."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise DataListError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    line: int  # 1-based line in the list file, for error messages


def parse_line(text: str) -> Tuple[str, int]:
    """Split one list line into (path, label); raises ValueError with the reason."""
    s = text.strip()
    m = _LINE.fullmatch(s)
    if m is None:
        raise ValueError("expected '<path> <label>' (separated by spaces, a tab or a comma)")
    path, sep, label_text = m.group("path").strip(), m.group("sep"), m.group("label")
    if not re.fullmatch(r"\d+", label_text):
        raise ValueError(f"label {label_text!r} is not a non-negative integer")
    if "\t" not in sep and "," not in sep and re.search(r"\s", path):
        raise ValueError(
            f"path {path!r} contains spaces; separate path and label with a tab or a comma"
        )
    return path, int(label_text)


def read_list(
    path: str,
    num_classes: Optional[int] = None,
    data_root: Optional[str] = None,
) -> List[Sample]:
    """Parse a data list; relative paths are joined to `data_root` when it is given.

    Labels must lie in [0, num_classes) when `num_classes` is given. An empty list is an error.
    """
    if not path:
        raise DataListError("no data list given; set the list path in the config (data.train_list/val_list/test_list)")
    if not os.path.isfile(path):
        raise DataListError(f"data list not found: {path!r}")
    samples: List[Sample] = []
    for lineno, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            rel, label = parse_line(raw)
        except ValueError as e:
            raise DataListError(f"{path}:{lineno}: {e}: {raw.rstrip()!r}") from None
        if num_classes is not None and label >= num_classes:
            raise DataListError(
                f"{path}:{lineno}: label {label} is out of range for {num_classes} classes "
                f"(labels are 0..{num_classes - 1}); check model.num_classes or the list"
            )
        full = os.path.join(data_root, rel) if data_root and not os.path.isabs(rel) else rel
        samples.append(Sample(full, label, lineno))
    if not samples:
        raise DataListError(f"{path}: the data list is empty")
    return samples


def format_line(path: str, label: int) -> str:
    """One list line: space-separated, or tab-separated when the path contains whitespace."""
    sep = "\t" if re.search(r"\s", path) else " "
    return f"{path}{sep}{label}"


def write_list(path: str, entries: Iterable[Tuple[str, int]]) -> int:
    """Write (path, label) pairs as a list file; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for p, label in entries:
            f.write(format_line(p, int(label)) + "\n")
            n += 1
    return n


def read_class_names(path: str, num_classes: Optional[int] = None) -> List[str]:
    """One class name per line; line i (from 0, blank lines not allowed) names class i."""
    if not os.path.isfile(path):
        raise DataListError(f"class-name file not found: {path!r}")
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    names: List[str] = []
    seen = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            raise DataListError(f"{path}:{lineno}: blank class name (line i names class i-1)")
        if name in seen:
            raise DataListError(f"{path}:{lineno}: class name {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise DataListError(f"{path}: the class-name file is empty")
    if num_classes is not None and len(names) != num_classes:
        raise DataListError(
            f"{path}: {len(names)} class names but {num_classes} classes configured; "
            "fix the file or model.num_classes"
        )
    return names


def write_class_names(path: str, names: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for name in names:
            f.write(f"{name}\n")
