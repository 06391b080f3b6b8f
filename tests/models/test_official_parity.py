"""The 2D models compute what the official ConvMAE code computes with the same weights.

`_reference_*` below restate the official 2D forward passes (ConvMAE's `vision_transformer.py`,
`models_convvit.py` and `models_convmae.py`) with plain functional ops on the official state-dict
keys: channels-first 2D convolutions, `nn.LayerNorm` defaults (eps 1e-5) in the patch embeddings
and conv blocks, eps 1e-6 in the transformer blocks and the final norms, explicit softmax attention.
They share no code with `video_mcmae.models`.
"""
import pytest
import timm
import torch
import torch.nn.functional as F

import video_mcmae.models  # noqa: F401  (registers the presets)

CONV_EPS, VIT_EPS = 1e-5, 1e-6
# max |ours - reference| / max |reference| in fp32 (with conv-block LayerNorms at eps 1e-6 instead of
# the official 1e-5 these weights give 3.6e-4 to 5.8e-2)
TOLERANCE = 2e-6


def _ln_channels(x, w, b):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, CONV_EPS).permute(0, 3, 1, 2)


def _patch_embed(sd, name, x):
    w = sd[f"{name}.proj.weight"]
    x = F.conv2d(x, w, sd[f"{name}.proj.bias"], stride=w.shape[-1])
    return F.gelu(_ln_channels(x, sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"]))


def _conv_block(sd, name, x, mask=None):
    y = F.conv2d(_ln_channels(x, sd[f"{name}.norm1.weight"], sd[f"{name}.norm1.bias"]),
                 sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"])
    if mask is not None:
        y = mask * y
    w = sd[f"{name}.attn.weight"]
    y = F.conv2d(y, w, sd[f"{name}.attn.bias"], padding=w.shape[-1] // 2, groups=w.shape[0])
    x = x + F.conv2d(y, sd[f"{name}.conv2.weight"], sd[f"{name}.conv2.bias"])
    y = _ln_channels(x, sd[f"{name}.norm2.weight"], sd[f"{name}.norm2.bias"])
    y = F.conv2d(F.gelu(F.conv2d(y, sd[f"{name}.mlp.fc1.weight"], sd[f"{name}.mlp.fc1.bias"])),
                 sd[f"{name}.mlp.fc2.weight"], sd[f"{name}.mlp.fc2.bias"])
    return x + y


def _block(sd, name, x, heads):
    b, n, c = x.shape
    y = F.layer_norm(x, (c,), sd[f"{name}.norm1.weight"], sd[f"{name}.norm1.bias"], VIT_EPS)
    qkv = F.linear(y, sd[f"{name}.attn.qkv.weight"], sd[f"{name}.attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) * (c // heads) ** -0.5).softmax(dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, sd[f"{name}.attn.proj.weight"], sd[f"{name}.attn.proj.bias"])
    y = F.layer_norm(x, (c,), sd[f"{name}.norm2.weight"], sd[f"{name}.norm2.bias"], VIT_EPS)
    y = F.linear(F.gelu(F.linear(y, sd[f"{name}.mlp.fc1.weight"], sd[f"{name}.mlp.fc1.bias"])),
                 sd[f"{name}.mlp.fc2.weight"], sd[f"{name}.mlp.fc2.bias"])
    return x + y


def _depth(sd, prefix):
    return len({k.split(".")[1] for k in sd if k.startswith(prefix + ".")})


def _reference_classifier(sd, x, heads):
    """models_convvit.ConvViT(global_pool=True).forward."""
    x = _patch_embed(sd, "patch_embed1", x)
    for i in range(_depth(sd, "blocks1")):
        x = _conv_block(sd, f"blocks1.{i}", x)
    x = _patch_embed(sd, "patch_embed2", x)
    for i in range(_depth(sd, "blocks2")):
        x = _conv_block(sd, f"blocks2.{i}", x)
    x = _patch_embed(sd, "patch_embed3", x).flatten(2).transpose(1, 2)
    x = F.linear(x, sd["patch_embed4.weight"], sd["patch_embed4.bias"]) + sd["pos_embed"]
    for i in range(_depth(sd, "blocks3")):
        x = _block(sd, f"blocks3.{i}", x, heads)
    x = F.layer_norm(x.mean(dim=1), (x.shape[-1],), sd["fc_norm.weight"], sd["fc_norm.bias"], VIT_EPS)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def _reference_pretraining(sd, imgs, mask, heads, decoder_heads):
    """models_convmae.MaskedAutoencoderConvViT.forward with a given mask (visible tokens kept in
    token order: the transformer does not depend on their order) and norm_pix_loss=True."""
    b, grid = imgs.shape[0], imgs.shape[-1] // 16
    mask2d = mask.float().reshape(b, 1, grid, grid)
    x = _patch_embed(sd, "patch_embed1", imgs)
    for i in range(_depth(sd, "blocks1")):
        x = _conv_block(sd, f"blocks1.{i}", x, 1 - F.interpolate(mask2d, scale_factor=4, mode="nearest"))
    stage1 = F.conv2d(x, sd["stage1_output_decode.weight"], sd["stage1_output_decode.bias"], stride=4)
    x = _patch_embed(sd, "patch_embed2", x)
    for i in range(_depth(sd, "blocks2")):
        x = _conv_block(sd, f"blocks2.{i}", x, 1 - F.interpolate(mask2d, scale_factor=2, mode="nearest"))
    stage2 = F.conv2d(x, sd["stage2_output_decode.weight"], sd["stage2_output_decode.bias"], stride=2)
    x = _patch_embed(sd, "patch_embed3", x).flatten(2).transpose(1, 2)
    x = F.linear(x, sd["patch_embed4.weight"], sd["patch_embed4.bias"]) + sd["pos_embed"]

    def visible(t):
        return t[~mask].reshape(b, -1, t.shape[-1])

    x = visible(x)
    for i in range(_depth(sd, "blocks3")):
        x = _block(sd, f"blocks3.{i}", x, heads)
    x = x + visible(stage1.flatten(2).transpose(1, 2)) + visible(stage2.flatten(2).transpose(1, 2))
    x = F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], VIT_EPS)
    x = F.linear(x, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    full = sd["mask_token"].expand(b, mask.shape[1], -1).clone()
    full[~mask] = x.reshape(-1, x.shape[-1])
    x = full + sd["decoder_pos_embed"]
    for i in range(_depth(sd, "decoder_blocks")):
        x = _block(sd, f"decoder_blocks.{i}", x, decoder_heads)
    x = F.layer_norm(x, (x.shape[-1],), sd["decoder_norm.weight"], sd["decoder_norm.bias"], VIT_EPS)
    pred = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])
    target = imgs.reshape(b, 3, grid, 16, grid, 16).permute(0, 2, 4, 3, 5, 1).reshape(b, grid * grid, -1)
    target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum(), pred


def _perturbed(model, seed=0):
    """The model with its norms, biases and tokens moved off their initial values (weights that an
    identity LayerNorm or zero bias would hide), and small stage-1/2 embeddings: the conv blocks'
    LayerNorms then see inputs of variance ~1e-4, where their eps is not negligible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1 or p.shape[:2] == (1, 1):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for embed in (model.patch_embed1, model.patch_embed2):
            embed.norm.weight.mul_(0.01)
            embed.norm.bias.mul_(0.01)
    return model.eval()


def _rel(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("name,img_size", [("convvit_tiny_patch16", 64), ("convvit_base_patch16", 64)])
def test_classifier_matches_the_official_forward(name, img_size):
    torch.manual_seed(0)
    model = _perturbed(timm.create_model(name, img_size=img_size, num_classes=10, head_init_scale=1.0))
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        ours = model(x)
        reference = _reference_classifier(model.state_dict(), x, model.blocks3[0].attn.num_heads)
    assert _rel(ours, reference) <= TOLERANCE


@pytest.mark.parametrize("visible_only", [True, False], ids=["visible-only", "dense"])
def test_pretraining_matches_the_official_forward(visible_only):
    torch.manual_seed(0)
    model = _perturbed(timm.create_model("convmae_convvit_tiny_patch16", img_size=64, visible_only=visible_only))
    x = torch.randn(2, 3, 64, 64)
    mask = model.draw_mask(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss, pred, _ = model(x, mask)
        ref_loss, ref_pred = _reference_pretraining(model.state_dict(), x, mask, model.blocks3[0].attn.num_heads,
                                                    model.decoder_blocks[0].attn.num_heads)
    assert _rel(pred, ref_pred) <= TOLERANCE
    assert _rel(loss, ref_loss) <= TOLERANCE
