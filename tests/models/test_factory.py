"""build_model, is_pretraining and the linear-probe head (video_mcmae.models.factory)."""
import os

import pytest
import timm
import torch

from video_mcmae.config import ConfigError, ModelConfig
from video_mcmae.models import (CLASSIFIER_PRESETS, PRESETS, PRETRAINING_PRESETS, LinearProbeHead, build_model,
                                dwconv, is_pretraining)


@pytest.mark.parametrize("name", PRESETS)
def test_is_pretraining_agrees_for_names_and_models(name):
    model = timm.create_model(name, device="meta")
    assert is_pretraining(name) == is_pretraining(model) == (name in PRETRAINING_PRESETS)
    assert hasattr(model, "mask_ratio") == is_pretraining(name)


def test_is_pretraining_sees_through_torch_compile_and_refuses_unknown_names():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=2, img_size=32)
    assert is_pretraining(torch.compile(model))
    assert not set(PRETRAINING_PRESETS) & set(CLASSIFIER_PRESETS)
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
