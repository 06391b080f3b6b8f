import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from video_mcmae.models.layers import Attention


@pytest.fixture
def tool(load_tool):
    return load_tool("count_flops")


def test_count_flops_on_tiny_presets(tool, capsys):
    rows = tool.main(["--presets", "videoconvmae_tiny_patch16", "videoconvvit_tiny_patch16",
                      "--frames", "4", "--img-size", "32"])
    dense, visible_only, finetune = rows
    assert [r["mode"] for r in rows] == ["pretrain@0.9 dense", "pretrain@0.9 visible-only", "finetune"]
    assert dense["input"] == finetune["input"] == "4x32x32"
    assert 0 < visible_only["gflops"] < dense["gflops"] and 0 < finetune["gflops"]
    assert 0.1 < finetune["params"] < 1
    out = capsys.readouterr().out
    assert "videoconvvit_tiny_patch16" in out and "GFLOPs" in out


def test_attention_flops_are_counted(tool):
    attn = Attention(dim=16, num_heads=2).eval()
    flops = FlopCountAnalysis(attn, torch.randn(1, 10, 16))
    flops.set_op_handle("aten::scaled_dot_product_attention", tool.sdpa_flop_handle)
    flops.unsupported_ops_warnings(False)
    qkv, proj = 10 * 16 * 48, 10 * 16 * 16
    scores_and_values = 2 * 10 * 10 * (8 + 8)  # heads x queries x keys x (d_qk + d_v)
    assert flops.total() == qkv + proj + scores_and_values
