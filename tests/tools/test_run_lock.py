"""One run per output folder (`video_mcmae.run_lock`): a second holder is refused in one line naming
the first; the lock goes with a clean end (no file left) and with kill -9 (the next run takes the
stale lock over and says so once); pretraining, finetuning and the multi-view test all refuse a
folder another run holds, before writing anything into it."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from video_mcmae.cli import finetune, multiview, pretrain
from video_mcmae.config import load_config
from video_mcmae.engine import distributed, trainer
from video_mcmae.errors import FolderInUseError
from video_mcmae.run_lock import LOCK_FILE, lock_folder, read_holder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = os.path.join(REPO, "configs", "demo", "pretrain.yaml")
FINETUNE = os.path.join(REPO, "configs", "demo", "finetune.yaml")
HOLD = "import sys, time; from video_mcmae.run_lock import lock_folder; lock_folder(sys.argv[1]); print('held', flush=True); time.sleep(120)"


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_second_holder_refused_naming_the_first_then_free_after_release(tmp_path):
    out = tmp_path / "run"
    first = lock_folder(str(out), "run.output_dir")
    with pytest.raises(FolderInUseError) as refused:
        lock_folder(str(out), "run.output_dir")
    message = str(refused.value)
    assert message.startswith(f"run.output_dir {out} is in use by another run (pid {os.getpid()} on "
                              f"{socket.gethostname()}, started ")
    assert "UTC: " in message and "choose another run.output_dir" in message and "\n" not in message
    assert read_holder(str(out))["pid"] == os.getpid()
    first.release()
    assert _files(out) == []  # a clean end leaves no lock file
    with lock_folder(str(out)) as again:
        assert again.taken_over == {} and again.takeover_note() == ""


def test_lock_of_a_killed_process_is_taken_over_with_one_note(tmp_path, child_env):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=child_env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid} on "):
            lock_folder(str(out))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_holder(str(out))["pid"] == holder.pid  # kill -9 leaves the record, not the lock
    with lock_folder(str(out)) as lock:
        assert lock.taken_over["pid"] == holder.pid
        assert lock.takeover_note().startswith(f"taking over {out / LOCK_FILE}: the run that held it "
                                               f"(pid {holder.pid} on {socket.gethostname()}, started ")


def _refusal(capsys):
    printed = "".join(capsys.readouterr())
    lines = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in printed, printed
    return lines[0]


@pytest.mark.parametrize("tool", ["pretrain", "finetune", "multiview"])
def test_tools_refuse_a_folder_another_run_holds(tmp_path, capsys, tool):
    out = tmp_path / "out"
    opts = ["--opt", "run.tensorboard=false"]
    argv = {"pretrain": (pretrain.main, ["--config", PRETRAIN, "--output_dir", str(out), *opts]),
            "finetune": (finetune.main, ["--config", FINETUNE, "--output_dir", str(out), *opts]),
            "multiview": (multiview.main, ["--config", FINETUNE, "--output_dir", str(out),
                                           "--checkpoint", str(tmp_path / "w.safetensors")])}
    main, args = argv[tool]
    with lock_folder(str(out), "held"):
        assert main(args) == 2
        assert _files(out) == [LOCK_FILE]  # nothing written beside the holder's lock
    what = "the test's output folder (--output_dir / test.output_dir)" if tool == "multiview" else "run.output_dir"
    assert _refusal(capsys).startswith(f"error: {what} {out} is in use by another run (pid {os.getpid()} on ")


def test_start_run_logs_the_takeover_of_a_killed_runs_lock(tmp_path, capsys, one_rank):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text('{"pid": 4242, "host": "node7", "started": "2026-01-01 00:00:00 UTC", '
                                 '"command": "python tools/run_pretrain.py", "run": "x"}\n')
    run = trainer.start_run(load_config(PRETRAIN, [f"run.output_dir={out}", "run.tensorboard=false"]))
    try:
        assert read_holder(str(out))["pid"] == os.getpid()
    finally:
        run.close()
        distributed.destroy()
    notes = [line for line in capsys.readouterr().out.splitlines() if "taking over" in line]
    assert len(notes) == 1 and notes[0].endswith(
        f"taking over {out / LOCK_FILE}: the run that held it (pid 4242 on node7, started 2026-01-01 00:00:00 UTC: "
        "python tools/run_pretrain.py) ended without releasing it (killed)")
    assert not (out / LOCK_FILE).exists()
