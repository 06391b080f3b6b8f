"""Two nodes simulated on one machine: two `deepspeed --no_ssh --node_rank {0,1}` launches with one
hostfile of two hosts (node0, node1, one CPU rank each, gloo, rendezvous on 127.0.0.1).

- One shared output folder (as a shared file system gives): pretraining saves, node 0's launcher
  is stopped with SIGTERM (every process of both nodes ends), `--auto_resume` on both nodes runs
  to the end; finetuning runs and saves; the multi-view test of its checkpoint writes predictions
  equal byte for byte to a one-process run's.
- A separate folder per node (node-local disks): refused at start-up on both nodes in one line
  saying the folder must be shared, before anything is written."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from video_mcmae.cli import multiview as multiview_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLABLE = os.path.join(REPO, "tests", "tools", "killable_run_pretrain.py")
FINETUNE = os.path.join(REPO, "tools", "run_finetune.py")
TEST = os.path.join(REPO, "tools", "test_multiview.py")
FT_CONFIG = os.path.join(REPO, "configs", "demo", "finetune.yaml")
DEEPSPEED = os.path.join(os.path.dirname(sys.executable), "deepspeed")
STEPS, EPOCHS = 2, 3


class Nodes:
    """Both nodes' launches of one script; node n's output in `<log>-node<n>.log`."""

    def __init__(self, tmp_path, env, port, log, script, node_args, pause=""):
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
        self.logs = [tmp_path / f"{log}-node{n}.log" for n in (0, 1)]
        self.procs = []
        for n in (0, 1):
            cmd = [DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(n), "--master_addr",
                   "127.0.0.1", "--master_port", port, script, *node_args(n)]
            with open(self.logs[n], "w") as f:
                self.procs.append(subprocess.Popen(cmd, env=dict(env, PAUSE_AFTER=pause), stdout=f,
                                                   stderr=subprocess.STDOUT, start_new_session=True))

    def output(self, node=None):
        return "".join(log.read_text() for n, log in enumerate(self.logs) if node in (None, n))

    def wait(self, timeout=300):
        try:
            return [p.wait(timeout=timeout) for p in self.procs]
        except subprocess.TimeoutExpired:
            for p in self.procs:
                os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError(f"the nodes hung:\n{self.output()[-3000:]}") from None

    def processes(self):
        roots = [psutil.Process(p.pid) for p in self.procs]
        return roots + [c for r in roots for c in r.children(recursive=True)]


def _data(root):
    d = root / "ssv2"
    return [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
            f"data.test_list={d / 'test.csv'}", f"data.class_names={d / 'classes.txt'}", "data.num_workers=0"]


def _opts(*opts):
    return [a for o in opts for a in ("--opt", o)]


@pytest.mark.slow
def test_two_nodes_pretrain_stop_resume_finetune_test(tmp_path, synthetic_root, child_env, free_port,
                                                      resume_run_args, log_records):
    out = tmp_path / "pretrain"

    def pretrain(log, *extra, pause=""):
        return Nodes(tmp_path, child_env, free_port(), log, KILLABLE,
                     lambda n: resume_run_args(out, synthetic_root, STEPS, EPOCHS, *extra), pause)

    # pretraining saves epoch-0001 (rank 0 then waits); SIGTERM to node 0's launcher ends both nodes
    run = pretrain("pretrain", pause="epoch-0001")
    deadline = time.time() + 300
    while not (out / "latest").is_file() and time.time() < deadline and run.procs[0].poll() is None:
        time.sleep(0.05)
    assert (out / "latest").read_text() == "epoch-0001", run.output()[-3000:]
    everyone = run.processes()
    start = time.time()
    run.procs[0].send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(everyone, timeout=60)
    took = time.time() - start
    assert not alive and took < 30, (took, run.output()[-3000:])
    assert "Traceback" not in run.output() and run.output(0).count("stopped by SIGTERM") == 1
    assert "stopped: another rank of this run ended" not in run.output(1)  # rank 1 is not the main rank
    print(f"both nodes' processes gone {took:.1f} s after SIGTERM to node 0's launcher")

    run = pretrain("resume", "--auto_resume")
    assert run.wait() == [0, 0], run.output()[-3000:]
    assert f"resuming {out / 'epoch-0001'}" in run.output(0)
    assert (out / "latest").read_text() == f"epoch-{EPOCHS:04d}"
    assert [r for r in log_records(out) if r["type"] == "iter"][-1]["step"] == EPOCHS * STEPS
    assert len(list((out / f"epoch-{EPOCHS:04d}").glob("*zero_pp_rank_*_optim_states.pt"))) == 2

    # finetuning from the pretraining run
    ft = tmp_path / "finetune"
    opts = _opts(*_data(synthetic_root), "model.num_classes=4", "optim.batch_size=2", "optim.epochs=1", "optim.warmup_epochs=1",
                 "optim.steps_per_epoch=2", "run.log_every=1", "run.tensorboard=false", "test.batch_size=2")
    run = Nodes(tmp_path, child_env, free_port(), "finetune", FINETUNE,
                lambda n: ["--config", FT_CONFIG, "--output_dir", str(ft), "--finetune", str(out), *opts])
    assert run.wait() == [0, 0], run.output()[-3000:]
    assert "loaded initial weights" in run.output(0) and (ft / "latest").read_text() == "epoch-0001"

    # the multi-view test of its checkpoint: the same predictions as one process
    views = _opts(*_data(synthetic_root), "model.num_classes=4", "data.test_num_temporal_views=1",
                  "data.test_num_spatial_crops=2", "test.batch_size=3")
    run = Nodes(tmp_path, child_env, free_port(), "test", TEST,
                lambda n: ["--config", FT_CONFIG, "--checkpoint", str(ft), "--output_dir", str(tmp_path / "test2"),
                           *views])
    assert run.wait() == [0, 0], run.output()[-3000:]
    assert multiview_cli.main(["--config", FT_CONFIG, "--checkpoint", str(ft), "--output_dir",
                               str(tmp_path / "test1"), *views]) == 0
    two, one = (tmp_path / "test2" / "predictions.csv").read_bytes(), (tmp_path / "test1" / "predictions.csv").read_bytes()
    assert two == one and two.count(b"\n") > 8


@pytest.mark.slow
def test_two_nodes_without_a_shared_folder_are_refused_at_start(tmp_path, synthetic_root, child_env, free_port,
                                                                resume_run_args):
    folders = [tmp_path / "node0-disk" / "run", tmp_path / "node1-disk" / "run"]
    run = Nodes(tmp_path, child_env, free_port(), "local", KILLABLE,
                lambda n: resume_run_args(folders[n], synthetic_root, STEPS, EPOCHS))
    assert run.wait() == [2, 2], run.output()[-3000:]
    errors = [line for line in run.output().splitlines() if line.startswith("error:")]
    assert errors == [f"error: run.output_dir {folders[0]} is not one folder shared by all ranks: rank 1 on "
                      f"{os.uname().nodename} cannot see the run.lock rank 0 holds there (a disk of its own node?); "
                      "put it on a file system every node mounts at the same path"], run.output()[-3000:]
    assert "Traceback" not in run.output()
    assert os.listdir(folders[0]) == [] and not folders[1].exists()  # nothing written
