"""build_model, from_weights, is_pretraining and the linear-probe head (video_mcmae.models.factory)."""
import dataclasses
import json
import os

import pytest
import timm
import torch
from safetensors.torch import save_file

from video_mcmae.config import ConfigError, ModelConfig
from video_mcmae.errors import CheckpointError
from video_mcmae.models import (PRESETS, PRETRAINING_PRESETS, LinearProbeHead, build_model,
                                dwconv, from_weights, is_pretraining)
from video_mcmae.weights import EXPORT_FORMAT


@pytest.mark.parametrize("name", PRESETS)
def test_is_pretraining_agrees_for_names_and_models(name):
    model = timm.create_model(name, device="meta")
    assert is_pretraining(name) == is_pretraining(model) == (name in PRETRAINING_PRESETS)
    assert hasattr(model, "mask_ratio") == is_pretraining(name)


def test_is_pretraining_sees_through_torch_compile_and_refuses_unknown_names():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=2, img_size=32)
    assert is_pretraining(torch.compile(model))
    classifier = timm.create_model("videoconvvit_tiny_patch16", num_frames=2, img_size=32)
    assert not is_pretraining(torch.compile(classifier))
    with pytest.raises(ValueError, match="unknown preset 'vit_base'; choose one of videoconvmae_tiny"):
        is_pretraining("vit_base")


def test_build_model_passes_the_kernel_choice_without_touching_the_environment(monkeypatch):
    monkeypatch.delenv(dwconv.BACKEND_ENV, raising=False)
    model = build_model(ModelConfig(name="videoconvmae_tiny_patch16", num_frames=2, img_size=32, dwconv_backend="torch"))
    assert {blk.attn.backend for blk in (*model.blocks1, *model.blocks2)} == {"torch"}
    assert dwconv.BACKEND_ENV not in os.environ


def test_build_model_geometry_head_and_errors():
    vit = build_model(ModelConfig(name="videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=5),
                      linprobe=True)
    assert vit.input_size == (4, 32, 32) and isinstance(vit.head, LinearProbeHead)
    assert vit(torch.randn(2, 3, 4, 32, 32)).shape == (2, 5)
    with pytest.raises(ConfigError, match="model.name: unknown preset"):
        build_model(ModelConfig(name="vit_base"))
    with pytest.raises(ConfigError, match="model.kwargs: videoconvvit_tiny_patch16 rejects"):
        build_model(ModelConfig(name="videoconvvit_tiny_patch16", kwargs={"no_such_argument": 1}))
    with pytest.raises(ConfigError, match=r"model.kwargs: norm_pix_loss is set by the config key model.norm_pix_loss; "
                                          r"set it there \(--opt model.norm_pix_loss=...\)"):
        build_model(ModelConfig(name="videoconvmae_tiny_patch16", kwargs={"norm_pix_loss": False}))
    with pytest.raises(ConfigError, match="head_drop_rate is set by the config key model.drop_rate"):
        build_model(ModelConfig(name="videoconvvit_tiny_patch16", kwargs={"head_drop_rate": 0.5}))
    with pytest.raises(ConfigError, match="grad_checkpointing is set by the config key model.grad_checkpointing"):
        build_model(ModelConfig(name="videoconvvit_tiny_patch16", kwargs={"grad_checkpointing": True}))
    with pytest.raises(ConfigError, match="linear probe needs a classifier"):
        build_model(ModelConfig(name="videoconvmae_tiny_patch16", num_frames=2, img_size=32), linprobe=True)


def _export(tmp_path, model_cfg, state, **info):
    """Weights as tools/export_weights.py writes them (safetensors + json)."""
    stem = tmp_path / model_cfg.name
    save_file({k: v.contiguous() for k, v in state.items()}, f"{stem}.safetensors")
    record = {"format": EXPORT_FORMAT, "preset": model_cfg.name, "model": dataclasses.asdict(model_cfg), **info}
    (tmp_path / f"{model_cfg.name}.json").write_text(json.dumps(record))
    return f"{stem}.safetensors"


def test_from_weights_builds_the_recorded_model_with_its_weights(tmp_path):
    cfg = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=2, img_size=32, num_classes=3,
                      kwargs={"global_pool": "max"})
    torch.manual_seed(0)
    trained = build_model(cfg, linprobe=True)
    path = _export(tmp_path, cfg, trained.state_dict(), linprobe=True)
    model, report = from_weights(path)
    assert isinstance(model.head, LinearProbeHead) and model.global_pool == "max"  # the record's model
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert report.missing_keys == [] and "head.fc.weight" in report.loaded_keys


def test_from_weights_strictness_is_the_caller_s(tmp_path):
    mae = ModelConfig(name="videoconvmae_tiny_patch16", num_frames=2, img_size=32)
    torch.manual_seed(0)
    path = _export(tmp_path, mae, build_model(mae).state_dict())
    vit = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=2, img_size=32, num_classes=3)
    with pytest.raises(CheckpointError, match=r"does not fit videoconvvit_tiny_patch16 \(missing \['head.weight'"):
        from_weights(path, vit)  # strict: a pretraining model's weights lack the classifier head
    encoder, report = from_weights(path, vit, strict=False)
    assert sorted(report.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert "decoder_embed.weight" in report.dropped_keys
    bigger = dataclasses.replace(vit, name="videoconvvit_small_patch16")
    with pytest.raises(CheckpointError, match="does not fit videoconvvit_small_patch16"):
        from_weights(path, bigger, strict=False)
    torch.save(build_model(vit).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare.pth record no model; pass the model config"):
        from_weights(str(tmp_path / "bare.pth"))
    assert from_weights(str(tmp_path / "bare.pth"), vit)[0].num_classes == 3
