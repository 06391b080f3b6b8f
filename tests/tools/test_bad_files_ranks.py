"""Unreadable training videos on two CPU ranks (deepspeed launcher): the count and the
data.max_bad_fraction limit are over the distinct files of both ranks, and whichever rank finds
the limit passed, both stop with one `error:` line and exit status 2 (no hanging rank, no gloo
traceback)."""
import json
import os
import subprocess
import sys

import pytest
from torch.utils.data import DistributedSampler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_LINES, NUM_BAD = 20, 6


def _write_list(tmp_path, synthetic_root, bad_positions):
    """A 20-line training list: the synthetic videos, with unreadable files at `bad_positions`."""
    good = (synthetic_root / "ssv2" / "train.csv").read_text().splitlines()
    lines = []
    for i in range(NUM_LINES):
        if i in bad_positions:
            path = tmp_path / f"broken-{i:02d}.webm"
            path.write_bytes(b"\x1aE\xdf\xa3 not a video, cut short")
            lines.append(f"{path} 0")
        else:
            lines.append(good[i % len(good)])
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.csv"


def _pretrain(tmp_path, synthetic_root, train_list, max_bad_fraction, workers, child_env, free_port):
    out = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port", free_port(),
           os.path.join(REPO, "tools", "run_pretrain.py"), "--config", os.path.join(REPO, "configs", "demo", "pretrain.yaml"),
           "--output_dir", str(out), "--opt", f"data.data_root={synthetic_root / 'ssv2'}",
           "--opt", f"data.train_list={train_list}", "--opt", f"data.num_workers={workers}",
           "--opt", f"data.max_bad_fraction={max_bad_fraction}", "--opt", "optim.batch_size=2",
           "--opt", "optim.epochs=1", "--opt", "optim.warmup_epochs=1", "--opt", "run.log_every=1", "--opt", "run.tensorboard=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=400)
    return proc, out


def _error_lines(proc):
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_bad_files_counted_over_both_ranks(tmp_path, synthetic_root, child_env, free_port):
    # Half in each rank's lines of the epoch (DistributedSampler order, seed 0), none next to
    # another: a bad line is replaced by the next, readable one, so only the rank that samples a
    # bad line finds it, and neither rank alone finds more than 3.
    bad = []
    for rank in (0, 1):
        mine = []
        for i in DistributedSampler(range(NUM_LINES), num_replicas=2, rank=rank, shuffle=True, seed=0):
            if len(mine) < NUM_BAD // 2 and not {i - 1, i + 1} & set(bad + mine):
                mine.append(i)
        bad += mine
    assert len(bad) == NUM_BAD
    train_list = _write_list(tmp_path, synthetic_root, bad)

    proc, out = _pretrain(tmp_path, synthetic_root, train_list, 0.5, 1, child_env, free_port)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    epoch = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    assert epoch[-1]["bad_files"] == NUM_BAD  # every line was read once: all 6, found by either rank

    (tmp_path / "again").mkdir()
    proc, _ = _pretrain(tmp_path / "again", synthetic_root, train_list, 0.25, 1, child_env, free_port)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _error_lines(proc) == [_error_lines(proc)[0]] and _error_lines(proc)[0].startswith(
        f"error: {NUM_BAD} of {NUM_LINES} videos in the training list are unreadable (more than "
        "data.max_bad_fraction=0.25): ")
    assert "Traceback" not in proc.stdout + proc.stderr and "Connection reset" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_stop_found_by_rank_1_alone_stops_both(tmp_path, synthetic_root, child_env, free_port):
    # The first line rank 1 reads (DistributedSampler order, seed 0, epoch 0) starts a run of 6
    # unreadable lines: rank 1 marks all 6 while looking for a replacement and passes the limit
    # (5 of 20) on its own at its first batch; rank 0 finds none.
    first = next(i for i in DistributedSampler(range(NUM_LINES), num_replicas=2, rank=1, shuffle=True, seed=0)
                 if i + NUM_BAD <= NUM_LINES)
    train_list = _write_list(tmp_path, synthetic_root, range(first, first + NUM_BAD))
    proc, out = _pretrain(tmp_path, synthetic_root, train_list, 0.25, 0, child_env, free_port)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = _error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {NUM_BAD} of {NUM_LINES} videos in the training list are unreadable (more than "
        f"data.max_bad_fraction=0.25): {tmp_path / f'broken-{first:02d}.webm'}, "), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr and "Connection reset" not in proc.stdout + proc.stderr
    assert not list(out.glob("epoch-*"))
