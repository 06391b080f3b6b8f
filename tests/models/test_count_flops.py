import pytest
import timm
import torch
from fvcore.nn import FlopCountAnalysis

from video_mcmae.models.layers import Attention


@pytest.fixture
def tool(load_tool):
    return load_tool("count_flops")


def test_count_flops_on_tiny_presets(tool, capsys):
    rows = tool.main(["--presets", "videoconvmae_tiny_patch16", "videoconvvit_tiny_patch16",
                      "--frames", "4", "--img-size", "32", "--decoder-mask-ratio", "0", "--no-plain-vit"])
    dense, visible_only, finetune = rows
    assert [r["mode"] for r in rows] == ["pretrain@0.9 dense", "pretrain@0.9 visible-only", "finetune"]
    assert dense["input"] == finetune["input"] == "4x32x32"
    assert 0 < visible_only["gflops"] < dense["gflops"] and 0 < finetune["gflops"]
    assert 0.1 < finetune["params"] < 1
    out = capsys.readouterr().out
    assert "videoconvvit_tiny_patch16" in out and "GFLOPs" in out


def decoder_flops(model, tokens: int) -> int:
    """fvcore's count of the decoder blocks, norm and head on `tokens` rows (linear layers D x D' per
    row, attention 2 x D x tokens^2 per block, LayerNorms 5 per value)."""
    dim, depth = model.decoder_embed.out_features, len(model.decoder_blocks)
    block = 12 * tokens * dim * dim + 2 * dim * tokens * tokens + 2 * 5 * tokens * dim
    return depth * block + 5 * tokens * dim + tokens * dim * model.decoder_pred.out_features


@pytest.mark.parametrize("plain_vit", [False, True], ids=["videoconvmae", "plain_vit"])
def test_decoder_masking_saves_exactly_the_decoders_work_on_the_dropped_tokens(tool, plain_vit):
    # 4 x 64 x 64: a 2 x 4 x 4 grid, tube mask 0.9 -> 28 masked and 4 visible; decoder mask 0.5 keeps 14
    args = ["--frames", "4", "--img-size", "64", "--decoder-mask-ratio", "0.5"]
    if plain_vit:
        rows = tool.main(["--presets", "videoconvvit_tiny_patch16", *args])[1:]
        model = tool.PlainViTMAE((4, 64, 64))
    else:
        rows = tool.main(["--presets", "videoconvmae_tiny_patch16", "--no-plain-vit", *args])[2:]
        model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=64)
    full, masked = rows
    assert (full["mode"], masked["mode"]) == ("pretrain@0.9 visible-only", "pretrain@0.9 visible-only dec@0.5")
    saved = (full["gflops"] - masked["gflops"]) * 1e9
    assert saved == pytest.approx(decoder_flops(model, 32) - decoder_flops(model, 18), rel=1e-9)


def test_attention_flops_are_counted(tool):
    attn = Attention(dim=16, num_heads=2).eval()
    flops = FlopCountAnalysis(attn, torch.randn(1, 10, 16))
    flops.set_op_handle("aten::scaled_dot_product_attention", tool.sdpa_flop_handle)
    flops.unsupported_ops_warnings(False)
    qkv, proj = 10 * 16 * 48, 10 * 16 * 16
    scores_and_values = 2 * 10 * 10 * (8 + 8)  # heads x queries x keys x (d_qk + d_v)
    assert flops.total() == qkv + proj + scores_and_values
