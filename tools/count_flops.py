"""Parameters and GFLOPs (fvcore, one multiply-add = one FLOP) of model presets.

Pretraining presets are counted in their pretraining forward (encoder + decoder + loss, with a mask
of the preset's ratio, 0.9 for video) twice: the dense masked path (conv stages on every position)
and the visible-only path (`visible_only`). Classifiers are counted in their finetuning forward.

    python tools/count_flops.py --presets videoconvmae_base_patch16 videoconvvit_base_patch16 \
        --frames 16 --img-size 224
"""
import argparse
import sys
import warnings

import timm
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from video_mcmae.cli import run_cli
from video_mcmae.models import PRESETS, is_pretraining  # also registers the presets

DEFAULT_PRESETS = ("videoconvmae_base_patch16", "videoconvmae_base_msd_patch16", "videoconvvit_base_patch16")


def sdpa_flop_handle(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention: Q K^T and attn V, B*H*N*M*(d + d_v) multiply-adds."""
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    heads = 1
    for b in batch:
        heads *= b
    return heads * n * m * (d + dv)


def count(name: str, frames: int, img_size: int, mask_ratio: float = None, visible_only: bool = False) -> dict:
    """Params (M) and GFLOPs of one preset at batch size 1 (`visible_only` picks a pretraining path)."""
    overrides = dict(img_size=img_size)
    if name.startswith("video"):
        overrides["num_frames"] = frames
    if is_pretraining(name):
        overrides["visible_only"] = visible_only
        if mask_ratio is not None:
            overrides["mask_ratio"] = mask_ratio
    model = timm.create_model(name, **overrides).eval()
    x = torch.randn(1, model.in_chans, *model.input_size)
    pretrain = is_pretraining(model)
    mode = f"pretrain@{model.mask_ratio:g} {'visible-only' if visible_only else 'dense'}" if pretrain else "finetune"
    inputs = (x, model.draw_mask(x, torch.Generator().manual_seed(0))) if pretrain else (x,)
    flops = FlopCountAnalysis(model, inputs)
    flops.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_handle)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return dict(preset=name, mode=mode,
                input="x".join(map(str, model.input_size)),
                params=sum(p.numel() for p in model.parameters()) / 1e6, gflops=flops.total() / 1e9)


def format_table(rows: list) -> str:
    header = f"{'preset':<42} {'mode':<26} {'input':<12} {'params (M)':>10} {'GFLOPs':>9}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['preset']:<42} {r['mode']:<26} {r['input']:<12} {r['params']:>10.2f} {r['gflops']:>9.3f}"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="registered preset names")
    parser.add_argument("--frames", type=int, default=16, help="clip length for video presets")
    parser.add_argument("--img-size", type=int, default=224, help="input height and width")
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="mask ratio of pretraining presets (default: the preset's own)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore's jit tracing is deprecated upstream
        rows = [count(name, args.frames, args.img_size, args.mask_ratio, visible_only)
                for name in args.presets for visible_only in ((False, True) if is_pretraining(name) else (False,))]
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
