"""video_mcmae.paths: output folders are probed with a real create (and nothing is left behind),
long lists of paths become one line plus a file holding all of them, and files are replaced whole."""
import os

import pytest

from video_mcmae.errors import OutputError
from video_mcmae.paths import check_writable, summarise, write_atomic


def test_a_writable_folder_passes_and_nothing_is_created(tmp_path):
    assert check_writable(str(tmp_path / "a" / "b"), "--out") == str(tmp_path / "a" / "b")
    assert os.listdir(tmp_path) == []  # the probe went to the nearest existing folder and is gone
    (tmp_path / "c").mkdir()
    check_writable(str(tmp_path / "c"), "--out")
    assert os.listdir(tmp_path / "c") == []


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=f"^--out \\({tmp_path / 'f'}\\): a file is where a folder is needed"):
        check_writable(str(tmp_path / "f" / "sub"), "--out")


def test_a_folder_another_rank_makes_during_the_check_is_not_a_file_in_the_way(tmp_path, monkeypatch):
    """Rank 0 creates the output folder (its lock) while rank 1 checks it: the folder appears
    between the check's `isdir` and `lexists` (a run's rank 1 once exited with status 2 there)."""
    out = tmp_path / "run"
    real_isdir = os.path.isdir

    def isdir_then_another_rank_makes_it(path):
        found = real_isdir(path)
        if os.fspath(path) == str(out) and not found:
            out.mkdir()
        return found

    monkeypatch.setattr(os.path, "isdir", isdir_then_another_rank_makes_it)
    assert check_writable(str(out), "--out") == str(out)


def test_a_folder_that_refuses_new_files_is_named(tmp_path):
    try:  # sysfs refuses new entries even to root (chmod does not stop root)
        os.close(os.open("/sys/.video_mcmae-probe", os.O_CREAT | os.O_WRONLY))
        os.unlink("/sys/.video_mcmae-probe")
        pytest.skip("no read-only folder on this machine")
    except OSError:
        pass
    with pytest.raises(OutputError, match="^--out '/sys/x' \\(its nearest existing folder '/sys'\\): it is not writable"):
        check_writable("/sys/x", "--out")


def test_summarise(tmp_path):
    assert summarise(["a", "b"], "bad files", str(tmp_path / "all.txt")) == "2 bad files: a, b"
    assert not (tmp_path / "all.txt").exists()
    names = [f"v{i}" for i in range(10)]
    line = summarise(names, "bad files", str(tmp_path / "x" / "all.txt"), [f"{n}\tgone" for n in names])
    assert line == f"10 bad files: v0, v1, v2, ... (all 10 listed in {tmp_path / 'x' / 'all.txt'})"
    assert (tmp_path / "x" / "all.txt").read_text().splitlines() == [f"{n}\tgone" for n in names]
    assert os.listdir(tmp_path / "x") == ["all.txt"]


def test_write_atomic_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "summary.json"
    write_atomic(str(path), lambda f: f.write(b"old"))
    assert path.read_bytes() == b"old"

    def fails_half_way(f):  # a full disk or a kill in the middle of the write
        f.write(b"new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(str(path), fails_half_way)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["summary.json"]  # no temporary left


def test_write_atomic_writes_through_a_hidden_temporary_of_its_own(tmp_path, monkeypatch):
    """Readers that list the folder (records count `*.pt`) never see the temporary under the
    final name's pattern, and two processes writing the same file use different temporaries."""
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(src), real_replace(src, dst)))
    write_atomic(str(tmp_path / "a.pt"), lambda f: f.write(b"x"))
    name = os.path.basename(seen[0])
    assert name.startswith(".a.pt.") and str(os.getpid()) in name and not name.endswith(".pt")
