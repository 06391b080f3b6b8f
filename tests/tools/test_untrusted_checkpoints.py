"""A checkpoint folder is never unpickled with code in it: a real 1-rank ZeRO-1 bf16 checkpoint,
copied and poisoned with an object whose unpickling would create a file, (a) in its model-states
file and (b) in its ZeRO optimizer file, is refused by every entry point that reads checkpoint
folders — one line naming the file, exit status 2 (the api raises `CheckpointError`) — and the
file is never created.

The checkpoint is made once per module by one run of tools/run_pretrain.py; the entry points run
in this process (their `main(argv)`), except `run_finetune.py --eval --resume`, which builds a
DeepSpeed engine before it loads the weights and so runs as its own process."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import tool_module
from video_mcmae import api
from video_mcmae.cli import finetune, pretrain
from video_mcmae.cli import multiview as multiview_cli
from video_mcmae.weights import MODEL_STATES, CheckpointError, check_checkpoint_folder, load_checkpoint_file, read_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTIM_STATES = "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


export_tool, viz_tool = tool_module("export_weights"), tool_module("visualize_reconstruction")


class _Payload:
    """Unpickling this calls open(target, 'w'): code from the checkpoint would run."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _data_opts(root, *extra):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
            f"data.test_list={d / 'test.csv'}", f"data.class_names={d / 'classes.txt'}", "data.num_workers=0",
            "optim.batch_size=2", "run.tensorboard=false", *extra]
    return [a for o in opts for a in ("--opt", o)]


def _pretrain_args(root, out, *extra):
    return ["--config", os.path.join(REPO, "configs", "demo", "pretrain.yaml"), "--output_dir", str(out),
            *_data_opts(root, "deepspeed.zero_stage=1", "deepspeed.precision=bf16", "optim.epochs=1", "optim.warmup_epochs=1",
                        "optim.steps_per_epoch=1"), *extra]


def _finetune_args(root, out, *extra):
    return ["--config", os.path.join(REPO, "configs", "demo", "finetune.yaml"), "--output_dir", str(out),
            *_data_opts(root, "optim.epochs=1", "optim.warmup_epochs=1", "optim.steps_per_epoch=1"), *extra]


@pytest.fixture(scope="module")
def clean_run(synthetic_root, tmp_path_factory):
    """A run dir holding epoch-0001 (ZeRO-1, bf16, one rank) and `latest`."""
    out = tmp_path_factory.mktemp("untrusted") / "clean"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "run_pretrain.py"), *_pretrain_args(synthetic_root, out)],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "epoch-0001" / OPTIM_STATES).is_file()
    return out


@pytest.fixture(scope="module", params=[MODEL_STATES, OPTIM_STATES], ids=["model_states", "zero_optimizer"])
def poisoned(request, clean_run, tmp_path_factory):
    """(run dir, the poisoned file, the file its unpickling would create) for a copy of the clean run."""
    out = tmp_path_factory.mktemp("poisoned") / "run"
    shutil.copytree(clean_run, out)
    marker = out.parent / "code-ran"
    victim = out / "epoch-0001" / request.param
    state = load_checkpoint_file(str(victim), mmap=False)
    state["note"] = _Payload(str(marker))
    torch.save(state, victim)
    return out, victim, marker


def _printed(capsys):
    captured = capsys.readouterr()
    return captured.out + captured.err


def _assert_refused(rc, printed, victim, marker):
    assert not marker.exists(), "the checkpoint's code ran"
    assert rc == 2, printed
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in printed, printed
    assert str(victim) in errors[0] and "not plain weights (io.open)" in errors[0], errors[0]
    assert "only resume/export checkpoints you made or trust" in errors[0]


def test_the_clean_checkpoint_reads(clean_run):
    check_checkpoint_folder(str(clean_run / "epoch-0001"))
    weights = read_weights(str(clean_run))
    assert weights.form == "checkpoint" and weights.preset == "videoconvmae_tiny_patch16"


def test_pretrain_resume(poisoned, synthetic_root, tmp_path, capsys):
    out, victim, marker = poisoned
    rc = pretrain.main(_pretrain_args(synthetic_root, tmp_path / "new", "--resume", str(out / "epoch-0001"),
                                      "--opt", "optim.epochs=2"))
    _assert_refused(rc, _printed(capsys), victim, marker)
    assert not (tmp_path / "new" / "config.yaml").exists()  # refused before anything was written


def test_pretrain_auto_resume(poisoned, synthetic_root, capsys):
    out, victim, marker = poisoned
    rc = pretrain.main(_pretrain_args(synthetic_root, out, "--auto_resume", "--opt", "optim.epochs=2"))
    _assert_refused(rc, _printed(capsys), victim, marker)


def test_finetune_from_checkpoint(poisoned, synthetic_root, tmp_path, capsys):
    out, victim, marker = poisoned
    rc = finetune.main(_finetune_args(synthetic_root, tmp_path / "ft", "--finetune", str(out / "epoch-0001")))
    _assert_refused(rc, _printed(capsys), victim, marker)


@pytest.mark.slow
def test_finetune_eval_resume(poisoned, synthetic_root, tmp_path, child_env):
    # its own process: the DeepSpeed engine is built before the weights are loaded, and DeepSpeed
    # keeps its process groups for the life of a process
    out, victim, marker = poisoned
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "run_finetune.py"),
                           *_finetune_args(synthetic_root, tmp_path / "ev", "--eval", "--resume", str(out / "epoch-0001"))],
                          env=child_env, capture_output=True, text=True, timeout=300)
    _assert_refused(proc.returncode, proc.stdout + proc.stderr, victim, marker)


def test_export_weights(poisoned, tmp_path, capsys):
    out, victim, marker = poisoned
    rc = export_tool.main([str(out), str(tmp_path / "w")])
    _assert_refused(rc, _printed(capsys), victim, marker)
    assert not list(tmp_path.glob("w.*"))


def test_api_load(poisoned):
    out, victim, marker = poisoned
    with pytest.raises(CheckpointError, match="not plain weights") as err:
        api.load(str(out / "epoch-0001"))
    assert str(victim) in str(err.value) and not marker.exists()


def test_multiview_test(poisoned, synthetic_root, tmp_path, capsys):
    out, victim, marker = poisoned
    config = os.path.join(REPO, "configs", "demo", "finetune.yaml")
    rc = multiview_cli.main(["--config", config, "--checkpoint", str(out), "--output_dir", str(tmp_path / "test"),
                       *_data_opts(synthetic_root)])
    _assert_refused(rc, _printed(capsys), victim, marker)


def test_visualize_reconstruction(poisoned, synthetic_root, tmp_path, capsys):
    out, victim, marker = poisoned
    video = next((synthetic_root / "ssv2").rglob("*.webm"), None) or next((synthetic_root / "ssv2").rglob("*.mp4"))
    rc = viz_tool.main([str(video), "--weights", str(out / "epoch-0001"), "--out", str(tmp_path / "viz")])
    _assert_refused(rc, _printed(capsys), victim, marker)
    assert not (tmp_path / "viz").exists()
