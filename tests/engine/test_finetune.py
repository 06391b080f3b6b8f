"""In-process (one CPU rank) finetuning paths: the linear probe trains only its BatchNorm +
linear head on the frozen encoder and exports/loads as such; `--eval` needs weights."""
import os

import pytest
import torch

from video_mcmae.config import ConfigError, load_config
from video_mcmae.data.lists import DataListError
from video_mcmae.engine import checkpoint as ckpt
from video_mcmae.engine.finetune import run_finetune
from video_mcmae.models import from_weights
from video_mcmae.weights import consolidated_state_dict

def _cfg(root, out, *opts):
    d = root / "ssv2"
    return load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo", "finetune.yaml"), [
        f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
        f"data.class_names={d / 'classes.txt'}", "data.num_workers=0", "model.num_classes=4",
        "model.drop_path_rate=0.0", "optim.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=1", "optim.steps_per_epoch=2",
        "optim.weight_decay=0.0", "optim.layer_decay=1.0", "deepspeed.zero_stage=1", "run.tensorboard=false",
        f"run.output_dir={out}", *opts])


def test_linear_probe_trains_only_the_head(tmp_path, synthetic_root, one_rank):
    import timm
    from safetensors.torch import save_file

    import video_mcmae.models  # noqa: F401  (registers presets)

    encoder = timm.create_model("videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=4)
    start = {k: v.clone() for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    save_file({k: v.contiguous() for k, v in start.items()}, str(tmp_path / "enc.safetensors"))
    out = tmp_path / "probe"
    metrics = run_finetune(_cfg(synthetic_root, out, "optim.lr=0.1", "model.img_size=64",
                                   "data.short_side_size=64"),
                           finetune=str(tmp_path / "enc.safetensors"),
                           linprobe=True)
    assert metrics["num_videos"] == 8
    weights, meta = consolidated_state_dict(str(out))
    assert meta["linprobe"] is True
    for k, v in start.items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=0, msg=k)  # frozen encoder
    assert weights["head.norm.running_var"].ne(1).any()  # BatchNorm statistics were updated
    assert "head.norm.weight" not in weights  # affine=False
    model, _ = from_weights(ckpt.export_weights(str(out), str(tmp_path / "probe_w"))[0])
    assert isinstance(model.head, video_mcmae.models.LinearProbeHead)


def test_eval_needs_weights(tmp_path, synthetic_root):
    with pytest.raises(ConfigError, match="--eval needs weights"):
        run_finetune(_cfg(synthetic_root, tmp_path), eval_only=True)


def test_a_validation_set_without_a_readable_video_is_refused_at_start_up(tmp_path, synthetic_root, one_rank):
    for name in ("a.webm", "b.webm"):
        (tmp_path / name).write_bytes(b"\x1aE\xdf\xa3 not a video")
    (tmp_path / "val.csv").write_text(f"{tmp_path / 'a.webm'} 0\n{tmp_path / 'b.webm'} 1\n")
    out = tmp_path / "run"
    with pytest.raises(DataListError, match=rf"the validation list {tmp_path / 'val.csv'} has no readable video "
                                            r"\(all 2 are unreadable"):
        run_finetune(_cfg(synthetic_root, out, f"data.val_list={tmp_path / 'val.csv'}"))
    assert not (out / "best").exists() and not list(out.glob("epoch-*"))
