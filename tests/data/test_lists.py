import os

import pytest

from video_mcmae.data.lists import (
    DataListError,
    parse_line,
    read_class_names,
    read_list,
    write_list,
)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a.mp4 3", ("a.mp4", 3)),
        ("a.mp4    3\n", ("a.mp4", 3)),
        ("a.mp4\t3", ("a.mp4", 3)),
        ("a.mp4,3", ("a.mp4", 3)),
        ("a.mp4 , 3", ("a.mp4", 3)),
        ("dir/my video.mp4\t7", ("dir/my video.mp4", 7)),
        ("dir/my video.mp4, 7", ("dir/my video.mp4", 7)),
        ("a,b.mp4 2", ("a,b.mp4", 2)),
        ("a,b.mp4,2", ("a,b.mp4", 2)),
    ],
)
def test_parse_line(line, expected):
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line, reason",
    [
        ("a.mp4", "expected '<path> <label>'"),
        ("a.mp4 x", "not a non-negative integer"),
        ("a.mp4 -1", "not a non-negative integer"),
        ("a.mp4 1.0", "not a non-negative integer"),
        ("my video.mp4 3", "contains spaces"),
        ("path label", "not a non-negative integer"),
    ],
)
def test_parse_line_errors(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_line(line)


def test_read_list_joins_root_and_names_lines(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a.mp4 0\n\n/abs/b.mp4\t1\nsub/c d.mp4,2\n")
    samples = read_list(str(lst), num_classes=3, data_root="/data")
    assert [(s.path, s.label, s.line) for s in samples] == [
        ("/data/a.mp4", 0, 1),
        ("/abs/b.mp4", 1, 3),
        (os.path.join("/data", "sub/c d.mp4"), 2, 4),
    ]


def test_read_list_errors(tmp_path):
    lst = tmp_path / "l.csv"
    lst.write_text("a.mp4 0\nb.mp4  1\nc.mp4 oops\n")
    with pytest.raises(DataListError, match=r"l.csv:3: label 'oops'"):
        read_list(str(lst))
    lst.write_text("a.mp4 0\nb.mp4 5\n")
    with pytest.raises(DataListError, match=r"l.csv:2: label 5 is out of range for 5 classes"):
        read_list(str(lst), num_classes=5)
    lst.write_text("\n\n")
    with pytest.raises(DataListError, match="empty"):
        read_list(str(lst))
    with pytest.raises(DataListError, match="not found"):
        read_list(str(tmp_path / "nope.csv"))


def test_write_list_round_trip(tmp_path):
    entries = [("a.mp4", 0), ("with space.mp4", 4)]
    write_list(str(tmp_path / "x.csv"), entries)
    assert [(s.path, s.label) for s in read_list(str(tmp_path / "x.csv"))] == entries


def test_class_names(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("abseiling\nair drumming\n")
    assert read_class_names(str(f), num_classes=2) == ["abseiling", "air drumming"]
    with pytest.raises(DataListError, match="2 class names but 3"):
        read_class_names(str(f), num_classes=3)
    f.write_text("a\n\nb\n")
    with pytest.raises(DataListError, match="classes.txt:2: blank"):
        read_class_names(str(f))
    f.write_text("a\nb\na\n")
    with pytest.raises(DataListError, match="classes.txt:3: .*repeats line 1"):
        read_class_names(str(f))


def test_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_bytes("\ufeffa.mp4 0\nb.mp4 1\n".encode("utf-8"))
    assert [s.path for s in read_list(str(lst))] == ["a.mp4", "b.mp4"]
    names = tmp_path / "classes.txt"
    names.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert read_class_names(str(names)) == ["cat", "dog"]


@pytest.mark.parametrize("reader", [read_list, read_class_names])
def test_non_utf8_file_is_refused_with_its_line(tmp_path, reader):
    lst = tmp_path / "latin1.csv"
    lst.write_bytes("a.mp4 0\ncaf\xe9.mp4 1\n".encode("latin-1"))
    with pytest.raises(DataListError, match=r"latin1.csv:2: not UTF-8 text.*save the file as UTF-8"):
        reader(str(lst))


def test_binary_file_is_refused(tmp_path):
    lst = tmp_path / "video.mp4"
    lst.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe")
    with pytest.raises(DataListError, match="not UTF-8 text"):
        read_list(str(lst))
