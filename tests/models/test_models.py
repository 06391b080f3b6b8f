from pathlib import Path

import pytest
import timm
import torch

import video_mcmae.models as models
from video_mcmae.engine.optim import param_groups

# Copies of the official 2D ConvMAE state-dict layouts (key, shape).
REFERENCE = Path(__file__).resolve().parent / "reference"


def _params(name: str, **kwargs) -> int:
    model = timm.create_model(name, device="meta", **kwargs)
    return model, sum(p.numel() for p in model.parameters())


def read_tsv(path: Path) -> list:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            rows.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return rows


def test_presets_lists_every_registered_model():
    registered = timm.list_models(module="convmae") + timm.list_models(module="video_convmae")
    assert sorted(registered) == sorted(models.PRESETS)


@pytest.mark.parametrize("name", models.PRESETS)
def test_every_preset_is_registered_and_builds(name):
    assert name in timm.list_models()
    model = timm.create_model(name, device="meta")
    assert isinstance(model, (models.ConvMAEBase, models.ConvViTBase))


def test_base_parameter_counts():
    _, n = _params("videoconvvit_base_patch16", num_classes=400)
    assert abs(n / 1e6 - 86) <= 1
    _, n = _params("convvit_base_patch16", num_classes=1000)
    assert round(n / 1e6, 2) == 85.37
    model, _ = _params("convmae_convvit_base_patch16_dec512d8b")
    encoder = sum(p.numel() for k, p in model.named_parameters() if not k.startswith(("decoder_", "mask_token")))
    assert round(encoder / 1e6, 2) == 88.93


@pytest.mark.parametrize("name,tsv", [
    ("convvit_base_patch16", "convmae_2d_finetune_base_state_dict.tsv"),
    ("convmae_convvit_base_patch16_dec512d8b", "convmae_2d_pretrain_base_state_dict.tsv"),
])
def test_2d_state_dict_matches_the_official_release(name, tsv):
    if not (REFERENCE / tsv).is_file():
        pytest.skip(f"reference layout {REFERENCE / tsv} not available")
    reference = read_tsv(REFERENCE / tsv)
    model = timm.create_model(name, device="meta")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == reference
    official = {key: torch.empty(shape) for key, shape in reference}
    model.load_state_dict(official, strict=True, assign=True)
    assert model.pos_embed.device.type == "cpu"


@pytest.mark.parametrize("size", [(2, 32, 32), (4, 48, 32), (6, 32, 64)])
def test_video_shapes_for_several_clip_sizes(size):
    t, h, w = size
    grid = (t // 2, h // 16, w // 16)
    tokens = grid[0] * grid[1] * grid[2]
    mae = timm.create_model("videoconvmae_tiny_patch16", num_frames=t, img_size=(h, w), mask_ratio=0.5)
    x = torch.randn(2, 3, t, h, w)
    loss, pred, mask = mae(x)
    assert mae.grid_size == grid and loss.ndim == 0
    assert pred.shape == (2, tokens, 1536) and mask.shape == (2, tokens)
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=t, img_size=(h, w), num_classes=7)
    feats = vit.forward_features(x)
    assert vit(x).shape == (2, 7) and feats["pooled"].shape == (2, 64)
    assert feats["stage1"].shape == (2, 32, t // 2, h // 4, w // 4)
    assert feats["stage2"].shape == (2, 48, t // 2, h // 8, w // 8)
    assert feats["stage3"].shape == (2, 64, *grid)


def test_overrides_reach_the_model():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, conv_kernel_size=(1, 3, 3),
                              mask_ratio=0.5, mask_type="random", norm_pix_loss=False, visible_only=False)
    assert model.blocks1[0].attn.weight.shape == (32, 1, 1, 3, 3)
    assert (model.mask_ratio, model.mask_type, model.norm_pix_loss, model.visible_only) == (0.5, "random", False, False)
    assert model.visible_only is False and timm.create_model("videoconvmae_tiny_patch16").visible_only is True
    vit = timm.create_model("videoconvvit_tiny_patch16", drop_path_rate=0.2, num_classes=5)
    assert vit.blocks3[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert vit.blocks1[0].drop_path.__class__.__name__ == "Identity"
    assert vit.head.weight.abs().max() < 1e-3  # head initialised at 0.001 scale


def test_msd_preset_has_the_fusion_layers():
    model = timm.create_model("videoconvmae_base_msd_patch16", device="meta")
    assert model.stage1_output_decode.weight.shape == (768, 256, 1, 4, 4)
    assert model.stage2_output_decode.weight.shape == (768, 384, 1, 2, 2)
    assert not hasattr(timm.create_model("videoconvmae_base_patch16", device="meta"), "stage1_output_decode")


def test_classifier_layer_ids_and_no_weight_decay():
    vit = timm.create_model("videoconvvit_tiny_patch16")
    assert vit.num_layers == 3
    ids = {name: vit.get_layer_id(name) for name, _ in vit.named_parameters()}
    assert ids["pos_embed"] == ids["patch_embed1.proj.weight"] == ids["blocks2.0.attn.weight"] == 0
    assert ids["patch_embed4.weight"] == 0
    assert ids["blocks3.0.attn.qkv.weight"] == 1 and ids["blocks3.1.mlp.fc2.bias"] == 2
    assert ids["fc_norm.weight"] == ids["head.bias"] == 3
    assert vit.no_weight_decay() == {"pos_embed"}


def test_grad_checkpointing_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    vit = timm.create_model("videoconvvit_tiny_patch16", num_frames=2, img_size=32).train()
    x = torch.randn(2, 3, 2, 32, 32)
    vit(x).sum().backward()
    grads = [p.grad.clone() for p in vit.parameters()]
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    vit(x).sum().backward()
    for g, p in zip(grads, vit.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_reset_classifier():
    vit = timm.create_model("convvit_tiny_patch16", img_size=32)
    vit.reset_classifier(3)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    vit.reset_classifier(0)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_user_errors_are_clear():
    with pytest.raises(ValueError, match="divisible by the total stride"):
        timm.create_model("videoconvmae_tiny_patch16", num_frames=5, img_size=32)
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model("videoconvvit_tiny_patch16", pretrained=True)
    with pytest.raises(ValueError, match="must be odd"):
        timm.create_model("videoconvvit_tiny_patch16", conv_kernel_size=4)
    model = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32)
    with pytest.raises(ValueError, match="num_frames/img_size"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_global_pool_choice():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 32, 32)
    avg = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3)
    mx = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3, global_pool="max")
    mx.load_state_dict(avg.state_dict())  # pooling adds no parameters
    avg.eval(), mx.eval()
    with torch.no_grad():
        tokens = avg.forward_features(x)["stage3"].flatten(2).transpose(1, 2)
        assert torch.allclose(avg.forward_features(x)["pooled"], avg.fc_norm(tokens.mean(1)), atol=1e-6)
        assert torch.allclose(mx.forward_features(x)["pooled"], mx.fc_norm(tokens.amax(1)), atol=1e-6)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("videoconvvit_tiny_patch16", global_pool="token")


def _uniform_bound(t: torch.Tensor) -> float:
    """max |t|: for U(-b, b) with many draws, just under b."""
    return t.abs().max().item()


def test_pretraining_init_follows_the_official_convmae():
    """nn.Linear: xavier-uniform with zero bias; the stage-3 embedding: xavier-uniform on its flattened
    weight; every other convolution (stage-1/2 embeddings, the conv blocks' 1x1 and depthwise convs,
    the MSD projections): nn.Conv's default, kaiming-uniform (a=sqrt(5)) and a uniform bias."""
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_msd_patch16")
    convs = [model.patch_embed1.proj, model.patch_embed2.proj, model.stage1_output_decode, model.stage2_output_decode]
    for blk in (*model.blocks1, *model.blocks2):
        convs += [blk.conv1, blk.conv2, blk.attn, blk.mlp.fc1, blk.mlp.fc2]
    for conv in convs:
        bound = 1 / conv.weight[0].numel() ** 0.5  # 1/sqrt(fan_in) for weight and bias alike
        assert 0.9 * bound < _uniform_bound(conv.weight) <= bound, conv
        assert 0 < _uniform_bound(conv.bias) <= bound, conv
    w = model.patch_embed3.proj.weight.flatten(1)
    assert 0.9 < _uniform_bound(w) / (6 / sum(w.shape)) ** 0.5 <= 1
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 10
    for linear in linears:
        assert 0.9 < _uniform_bound(linear.weight) / (6 / sum(linear.weight.shape)) ** 0.5 <= 1, linear
        assert not linear.bias.any(), linear
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(n.weight.eq(1).all() and not n.bias.any() for n in norms)


def test_pretraining_model_excludes_the_mask_token_from_weight_decay():
    model = timm.create_model("videoconvmae_tiny_patch16", learnable_pos=True)
    assert model.no_weight_decay() == {"pos_embed", "mask_token"}
    groups = param_groups(model, weight_decay=0.05)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model.mask_token)] == decay[id(model.pos_embed)] == 0.0
    assert decay[id(model.decoder_embed.weight)] == 0.05
