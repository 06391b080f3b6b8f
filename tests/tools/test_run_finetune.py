"""Two CPU ranks under torchrun: finetuning from exported pretraining weights (mixup, layer
decay) validates every epoch, keeps `best` and the epoch checkpoint; `--eval --resume best` in a
plain single process reproduces the best accuracy (validation is exact and rank-independent)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _opts(root):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
            f"data.class_names={d / 'classes.txt'}", "data.num_workers=0", "model.num_classes=4",
            "optim.batch_size=2", "optim.epochs=2", "optim.steps_per_epoch=2", "aug.mixup=0.8", "aug.cutmix=1.0",
            "run.eval_every=1", "run.log_every=1", "test.batch_size=3"]
    return [a for o in opts for a in ("--opt", o)]


@pytest.mark.slow
def test_two_rank_finetune_then_eval(tmp_path, synthetic_root, child_env, free_port):
    import timm
    from safetensors.torch import save_file

    import video_mcmae.models  # noqa: F401  (registers presets)

    pretrained = timm.create_model("videoconvmae_tiny_patch16", num_frames=8, img_size=64)
    weights = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, str(weights))

    out = tmp_path / "ft"
    script = os.path.join(REPO, "tools", "run_finetune.py")
    config = os.path.join(REPO, "configs", "demo", "finetune.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           script, "--config", config, "--data", "ssv2", "--output_dir", str(out), "--finetune", str(weights),
           *_opts(synthetic_root)]
    proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "loaded initial weights" in proc.stdout and "dropped (pretraining only)" in proc.stdout
    assert (out / "best" / "mp_rank_00_model_states.pt").is_file()
    assert (out / "latest").read_text() == "epoch-0002"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if r["type"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2] and all(r["num_videos"] == 8 for r in val)
    best = max(r["acc1"] for r in val)

    ev = subprocess.run([sys.executable, script, "--config", config, "--output_dir", str(out),
                         "--eval", "--resume", str(out / "best"), *_opts(synthetic_root)],
                        env=child_env, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    result = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert result["type"] == "val" and result["num_videos"] == 8
    assert result["acc1"] == pytest.approx(best)
    assert (out / "eval_config.yaml").is_file()
