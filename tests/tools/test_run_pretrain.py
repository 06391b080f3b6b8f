"""Two CPU ranks under the deepspeed launcher: ZeRO-2 bf16 pretraining on generated videos
writes epoch checkpoints, `latest`, logs and TensorBoard; the export tool consolidates the
2-way partitioned fp32 weights.

On a machine without GPUs `deepspeed --num_gpus 2` starts two ranks on the CPU accelerator
(gloo); DS_ACCELERATOR=cpu makes the choice explicit."""
import json
import os
import subprocess
import sys

import pytest
import torch

from video_mcmae.models import from_weights
from video_mcmae.weights import read_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data_opts(root):
    d = root / "ssv2"
    return ["--opt", f"data.data_root={d}", "--opt", f"data.train_list={d / 'train.csv'}",
            "--opt", f"data.val_list={d / 'val.csv'}", "--opt", f"data.class_names={d / 'classes.txt'}",
            "--opt", "data.num_workers=0", "--opt", "model.num_classes=4"]


@pytest.mark.slow
def test_two_rank_zero2_pretraining(tmp_path, synthetic_root, child_env, free_port):
    out = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port", free_port(),
           os.path.join(REPO, "tools", "run_pretrain.py"), "--config", os.path.join(REPO, "configs", "demo", "pretrain.yaml"),
           "--output_dir", str(out), *_data_opts(synthetic_root)[:4], "--opt", "data.num_workers=0",
           "--opt", "deepspeed.zero_stage=2", "--opt", "deepspeed.precision=bf16", "--opt", "optim.batch_size=2",
           "--opt", "optim.epochs=2", "--opt", "optim.steps_per_epoch=2", "--opt", "run.save_every=1",
           "--opt", "run.log_every=1", "--opt", "run.keep_checkpoints=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "effective batch 4 clips/step = 2 ranks x 2 videos x 1 accum x 1 num_sample" in proc.stdout

    assert sorted(p.name for p in out.iterdir() if p.name.startswith("epoch-")) == ["epoch-0002"]  # keep 1
    assert (out / "latest").read_text() == "epoch-0002"
    assert len(list((out / "epoch-0002").glob("bf16_zero_pp_rank_*_optim_states.pt"))) == 2
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").glob("events.*"))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["type"] == "iter"]
    assert [r["step"] for r in iters] == [1, 2, 3, 4]
    assert all(k in iters[-1] for k in ("loss", "lr", "wd", "grad_norm", "data_time", "iter_time"))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]

    export = subprocess.run([sys.executable, os.path.join(REPO, "tools", "export_weights.py"), str(out), str(tmp_path / "w")],
                            env=child_env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr[-2000:]
    exported = read_weights(str(tmp_path / "w.safetensors"), accept=("export",))
    model, meta = from_weights(exported)[0], exported.meta
    assert meta["preset"] == "videoconvmae_tiny_patch16" and meta["global_step"] == 4
    module = torch.load(out / "epoch-0002" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    for name, p in model.named_parameters():
        # fp32 masters from both partitions; the engine's bf16 copy is their rounding
        assert p.dtype == torch.float32
        torch.testing.assert_close(p.detach().to(torch.bfloat16), module[name], rtol=0, atol=0, msg=name)
