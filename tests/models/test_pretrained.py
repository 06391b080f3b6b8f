import logging

import pytest
import timm
import torch
from safetensors.torch import save_file

from video_mcmae.models import load_pretrained
from video_mcmae.models.embed import resize_pos_table, sincos_3d
from video_mcmae.models.pretrained import infer_grid


def _pretrained_state(name="videoconvmae_tiny_patch16", **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_frames=4, img_size=32, **kwargs)
    return model.state_dict()


def _assert_encoder_loaded(model, state):
    for key, value in model.state_dict().items():
        if key.startswith(("blocks", "patch_embed")):
            assert torch.equal(value, state[key]), key


def test_pretrain_to_classifier_with_another_frame_count_and_resolution(caplog):
    state = _pretrained_state(learnable_pos=True)
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=3)
    with caplog.at_level(logging.INFO, logger="video_mcmae.models.pretrained"):
        report = load_pretrained(vit, state)
    _assert_encoder_loaded(vit, state)
    assert report.resized_keys == {"pos_embed": ((1, 8, 64), (1, 64, 64))}
    expected = resize_pos_table(state["pos_embed"], (2, 2, 2), (4, 4, 4))
    assert torch.equal(vit.pos_embed.data, expected)
    assert set(report.missing_keys) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    assert report.unexpected_keys == []
    assert "mask_token" in report.dropped_keys and "norm.weight" in report.dropped_keys
    assert any(k.startswith("decoder_blocks.") for k in report.dropped_keys)
    assert "resized pos_embed" in caplog.text
    vit(torch.randn(1, 3, 8, 64, 64))


def test_trilinear_resize_keeps_a_table_that_is_constant_in_time():
    table = sincos_3d(64, (2, 3, 3))[None]
    resized = resize_pos_table(table, (2, 3, 3), (4, 3, 3)).view(4, 9, 64)
    spatial = table.view(2, 9, 64)[..., :48]
    assert torch.allclose(resized[..., :48], spatial[:1].expand(4, -1, -1), atol=1e-6)
    assert torch.equal(resize_pos_table(table, (2, 3, 3), (2, 3, 3)), table)


def test_fixed_tables_are_rebuilt_not_loaded():
    state = _pretrained_state()
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=8, img_size=48, learnable_pos=False)
    report = load_pretrained(vit, state)
    assert report.rebuilt_keys == ["pos_embed"] and "pos_embed" not in report.missing_keys
    assert torch.equal(vit.pos_embed, sincos_3d(64, (4, 3, 3))[None])


def test_msd_weights_are_dropped():
    state = _pretrained_state("videoconvmae_tiny_msd_patch16")
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32)
    report = load_pretrained(vit, state)
    assert {"stage1_output_decode.weight", "stage2_output_decode.bias"} <= set(report.dropped_keys)


@pytest.mark.parametrize("fmt", ["pth_model", "pth_module", "safetensors"])
def test_checkpoint_files_and_wrappers(tmp_path, fmt):
    state = _pretrained_state()
    if fmt == "safetensors":
        path = tmp_path / "weights.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "checkpoint.pth"
        key = "model" if fmt == "pth_model" else "module"
        torch.save({key: state, "epoch": 3}, path)
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32)
    report = load_pretrained(vit, path)
    _assert_encoder_loaded(vit, state)
    assert report.unexpected_keys == []


def test_2d_pretrain_to_classifier():
    torch.manual_seed(0)
    state = timm.create_model("convmae_convvit_tiny_patch16", img_size=32).state_dict()
    vit = timm.create_model("convvit_tiny_patch16", img_size=64)
    report = load_pretrained(vit, {"model": state})
    _assert_encoder_loaded(vit, state)
    assert report.resized_keys["pos_embed"] == ((1, 4, 64), (1, 16, 64))


def test_unadaptable_shapes_name_the_key_and_both_shapes():
    state = _pretrained_state()
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, embed_dims=(32, 48, 80))
    with pytest.raises(ValueError, match=r"'patch_embed3.proj.weight': checkpoint \(64, 48, 1, 2, 2\) "
                                         r"vs model \(80, 48, 1, 2, 2\)"):
        load_pretrained(vit, state)


def test_bad_sources_raise_clear_errors(tmp_path):
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained(vit, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(vit, {"something.else": torch.zeros(1)})
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only"):
        load_pretrained(vit, bad)


@pytest.mark.parametrize("num_tokens,model_grid,expected", [
    (1568, (8, 14, 14), (8, 14, 14)),
    (1568, (16, 14, 14), (8, 14, 14)),
    (2048, (8, 14, 14), (8, 16, 16)),
    (196, (16, 16), (14, 14)),
    (8, (4, 4, 4), (2, 2, 2)),
])
def test_checkpoint_grid_inference(num_tokens, model_grid, expected):
    assert infer_grid(num_tokens, model_grid) == expected


def test_another_label_set_needs_drop_prefixes_and_grid_can_be_given():
    torch.manual_seed(0)
    finetuned = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3).state_dict()
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=8, img_size=32, num_classes=5)
    with pytest.raises(ValueError, match=r"'head.weight': checkpoint \(3, 64\) vs model \(5, 64\)"):
        load_pretrained(vit, finetuned)
    report = load_pretrained(vit, finetuned, checkpoint_grid=(2, 2, 2), drop_prefixes=("head.",))
    assert report.checkpoint_grid == (2, 2, 2) and {"head.weight", "head.bias"} <= set(report.dropped_keys)
    assert set(report.missing_keys) == {"head.weight", "head.bias"}
    assert torch.equal(vit.fc_norm.weight, finetuned["fc_norm.weight"])
