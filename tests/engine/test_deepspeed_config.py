import json

import pytest

from video_mcmae.config import ConfigError, load_config
from video_mcmae.engine.deepspeed_config import build_ds_config


def test_built_from_run_config():
    cfg = load_config(None, ["optim.batch_size=8", "optim.accum_steps=2", "optim.clip_grad=1.5",
                             "deepspeed.zero_stage=2", "deepspeed.precision=fp16",
                             "deepspeed.initial_scale_power=7", "deepspeed.loss_scale_window=128"])
    ds = build_ds_config(cfg, world_size=4)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (8, 2, 64)
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_clipping"] == 1.5
    assert ds["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 7, "loss_scale_window": 128,
                          "hysteresis": 2, "min_loss_scale": 1}
    assert ds["bf16"] == {"enabled": False}
    assert "optimizer" not in ds and "scheduler" not in ds
    bf16 = build_ds_config(load_config(None, ["deepspeed.precision=bf16"]), 1)
    assert bf16["bf16"]["enabled"] and not bf16["fp16"]["enabled"] and bf16["gradient_clipping"] == 0.0


def _user(tmp_path, data, comment=False):
    path = tmp_path / "ds.json"
    text = json.dumps(data)
    path.write_text(("// a comment, as DeepSpeed allows\n" if comment else "") + text)
    return str(path)


def test_user_json_checked_and_completed(tmp_path):
    path = _user(tmp_path, {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 1},
                            "bf16": {"enabled": True}}, comment=True)
    cfg = load_config(None, ["optim.batch_size=4", "optim.accum_steps=3", f"deepspeed.config={path}"])
    ds = build_ds_config(cfg, world_size=2)
    assert ds["gradient_accumulation_steps"] == 3 and ds["train_batch_size"] == 24  # filled in
    assert ds["zero_optimization"] == {"stage": 1}  # the user's choices stay


@pytest.mark.parametrize("key, value, expected", [
    ("train_micro_batch_size_per_gpu", 16, r"train_micro_batch_size_per_gpu=16 .* gives 8 \(optim.batch_size\)"),
    ("gradient_accumulation_steps", 4, r"gradient_accumulation_steps=4 .* gives 1 \(optim.accum_steps\)"),
    ("train_batch_size", 64, r"train_batch_size=64 .* gives 16 \(optim.batch_size 8 x optim.accum_steps 1 x 2 ranks\)"),
])
def test_user_json_with_inconsistent_batch_is_refused(tmp_path, key, value, expected):
    path = _user(tmp_path, {key: value})
    cfg = load_config(None, ["optim.batch_size=8", f"deepspeed.config={path}"])
    with pytest.raises(ConfigError, match=expected):
        build_ds_config(cfg, world_size=2)


def test_user_json_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        build_ds_config(load_config(None, [f"deepspeed.config={tmp_path / 'none.json'}"]), 1)
    path = _user(tmp_path, {"optimizer": {"type": "Adam"}})
    with pytest.raises(ConfigError, match="remove 'optimizer'"):
        build_ds_config(load_config(None, [f"deepspeed.config={path}"]), 1)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not a valid DeepSpeed json"):
        build_ds_config(load_config(None, [f"deepspeed.config={bad}"]), 1)


def test_shipped_deepspeed_jsons_load(tmp_path):
    import glob
    import os

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = sorted(glob.glob(os.path.join(repo, "configs", "deepspeed", "*.json")))
    assert files
    for path in files:
        ds = build_ds_config(load_config(None, [f"deepspeed.config={path}", "optim.batch_size=4"]), 2)
        assert ds["train_batch_size"] == 8
