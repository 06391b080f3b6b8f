import json
import os

from video_mcmae.data.lists import read_class_names, read_list
from video_mcmae.data.readers import open_video


def test_build_ssv2_list(tmp_path, load_tool):
    tool = load_tool("build_data_list")
    (tmp_path / "labels.json").write_text(json.dumps(
        {"Pushing something from left to right": "1", "Putting something onto something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "78687", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right"},
        {"id": "42", "label": "putting a pen onto a book", "template": "Putting [something] onto [something]"},
    ]))
    out, names = tmp_path / "train.csv", tmp_path / "classes.txt"
    assert tool.main(["ssv2", "--labels", str(tmp_path / "labels.json"), "--split", str(tmp_path / "train.json"),
                      "--video-dir", "videos", "--out", str(out), "--class-names", str(names)]) == 0
    assert [(s.path, s.label) for s in read_list(str(out))] == [("videos/78687.webm", 1), ("videos/42.webm", 0)]
    assert read_class_names(str(names)) == ["Putting something onto something", "Pushing something from left to right"]
    (tmp_path / "test.json").write_text(json.dumps([{"id": "7"}]))
    assert tool.main(["ssv2", "--labels", str(tmp_path / "labels.json"), "--split", str(tmp_path / "test.json"),
                      "--out", str(tmp_path / "test.csv")]) == 2


def test_build_folder_list(tmp_path, load_tool):
    tool = load_tool("build_data_list")
    for cls, files in {"walking": ["b.mp4", "a.webm"], "abseiling": ["x.mp4", "notes.txt"]}.items():
        (tmp_path / "train" / cls).mkdir(parents=True)
        for f in files:
            (tmp_path / "train" / cls / f).write_bytes(b"")
    out, names = tmp_path / "train.csv", tmp_path / "classes.txt"
    assert tool.main(["folder", "--root", str(tmp_path / "train"), "--out", str(out), "--class-names", str(names)]) == 0
    assert [(s.path, s.label) for s in read_list(str(out))] == [
        ("abseiling/x.mp4", 0), ("walking/a.webm", 1), ("walking/b.mp4", 1)]
    assert read_class_names(str(names)) == ["abseiling", "walking"]
    (tmp_path / "val" / "walking").mkdir(parents=True)
    (tmp_path / "val" / "walking" / "v.mp4").write_bytes(b"")
    val = tmp_path / "val.csv"
    assert tool.main(["folder", "--root", str(tmp_path / "val"), "--classes", str(names), "--out", str(val)]) == 0
    assert [(s.path, s.label) for s in read_list(str(val))] == [("walking/v.mp4", 1)]


def test_an_existing_class_name_file_is_replaced_only_with_overwrite(tmp_path, capsys, load_tool):
    tool = load_tool("build_data_list")
    (tmp_path / "train" / "walking").mkdir(parents=True)
    (tmp_path / "train" / "walking" / "a.mp4").write_bytes(b"")
    out, names = tmp_path / "train.csv", tmp_path / "classes.txt"
    names.write_text("abseiling\nwalking\n")
    args = ["folder", "--root", str(tmp_path / "train"), "--out", str(out), "--class-names", str(names)]
    assert tool.main(args) == 2
    assert f"error: {names} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert names.read_text() == "abseiling\nwalking\n" and not out.exists()
    assert tool.main(args + ["--overwrite"]) == 0
    assert read_class_names(str(names)) == ["walking"] and [s.label for s in read_list(str(out))] == [0]


def test_an_existing_list_is_replaced_only_with_overwrite_before_any_scan(tmp_path, capsys, monkeypatch, load_tool):
    tool = load_tool("build_data_list")
    (tmp_path / "train" / "walking").mkdir(parents=True)
    (tmp_path / "train" / "walking" / "a.mp4").write_bytes(b"")
    out = tmp_path / "train.csv"
    out.write_text("kept/a.mp4 0\n")
    args = ["folder", "--root", str(tmp_path / "train"), "--out", str(out)]
    scans = []
    monkeypatch.setattr(tool, "folder_entries", lambda *a: scans.append(a))
    assert tool.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} exists; pass --overwrite to replace it, or choose another --out"
    assert out.read_text() == "kept/a.mp4 0\n" and scans == []
    monkeypatch.undo()
    assert tool.main(args + ["--overwrite"]) == 0
    assert [(s.path, s.label) for s in read_list(str(out))] == [("walking/a.mp4", 0)]


def test_check_data_list_splits_clean_and_quarantine(tmp_path, video_dir, vids, load_tool):
    tool = load_tool("check_data_list")
    bad = vids.make_bad_files(str(tmp_path / "bad"))
    lst = tmp_path / "train.csv"
    rel_bad = [os.path.relpath(p, tmp_path) for p in bad.values()]
    lst.write_text("".join(f"{p} 0\n" for p in [str(video_dir / "a.mp4"), str(video_dir / "b.webm")] + rel_bad))
    assert tool.main([str(lst), "--data-root", str(tmp_path), "--out-dir", str(tmp_path / "out"),
                      "--workers", "2", "--no-progress"]) == 0
    clean = read_list(str(tmp_path / "out" / "train.clean.csv"))
    assert [s.path for s in clean] == [str(video_dir / "a.mp4"), str(video_dir / "b.webm")]
    quarantine = (tmp_path / "out" / "train.quarantine.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in quarantine] == rel_bad
    assert all(line.split("\t")[1] for line in quarantine)


def test_reencode_short_side_and_skip(tmp_path, video_dir, load_tool):
    tool = load_tool("reencode_videos")
    args = ["--input-dir", str(video_dir), "--out-dir", str(tmp_path / "out"), "--short-side", "32", "--workers", "0"]
    assert tool.main(args) == 0
    with open_video(tmp_path / "out" / "wide.mp4", "pyav") as r:  # 48x80 -> 32x54 (even sides)
        assert r.get_frames([0]).shape == (1, 32, 54, 3) and r.num_frames == 20
    with open_video(tmp_path / "out" / "b.mp4", "pyav") as r:  # webm -> mp4, 48x64 -> 32x42
        assert r.get_frames([r.num_frames - 1]).shape == (1, 32, 42, 3) and r.num_frames == 24
    mtime = os.path.getmtime(tmp_path / "out" / "a.mp4")
    assert tool.main(args) == 0
    assert os.path.getmtime(tmp_path / "out" / "a.mp4") == mtime  # done files are skipped
    assert tool.output_size(240, 427, 320) == (240, 428) and tool.output_size(480, 640, 320) == (320, 426)
