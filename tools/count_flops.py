"""Parameters and GFLOPs (fvcore, one multiply-add = one FLOP) of model presets.

Pretraining presets are counted in their pretraining forward (encoder + decoder + loss, with a mask
of the preset's ratio, 0.9 for video) on the dense masked path (conv stages on every position) and
the visible-only path (`visible_only`), each without and with decoder masking (`dec@R`: the decoder sees
the visible tokens and a share 1 - R of the masked ones). Classifiers are counted in their finetuning
forward. Beside them, a plain ViT-B MAE of VideoMAE-B's shape (`PlainViTMAE`) is counted with and
without decoder masking, on the same clips and masks.

    python tools/count_flops.py --presets videoconvmae_base_patch16 videoconvvit_base_patch16 \
        --frames 16 --img-size 224 --decoder-mask-ratio 0.5
"""
import argparse
import math
import sys
import warnings

import timm
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from video_mcmae.cli import run_cli
from video_mcmae.models import PRESETS, ConvMAEBase, is_pretraining  # also registers the presets
from video_mcmae.models.embed import build_pos_embed
from video_mcmae.models.layers import Block
from video_mcmae.models.masking import draw_mask

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


class PlainViTMAE(nn.Module):
    """VideoMAE-B's pretraining forward, counted beside the presets: the whole clip cut into
    2 x 16 x 16 cubes and embedded, the sin-cos position table, 12 ViT-B blocks (768 wide, 12 heads)
    on the visible tokens, then this project's decoder (384 wide, 4 blocks, 6 heads) with its decoder
    masking (`ConvMAEBase`'s methods); in training mode it draws the decoder mask as the presets do."""

    name = "plain ViT-B MAE (VideoMAE-B shape)"
    forward_decoder = ConvMAEBase.forward_decoder
    draw_decoder_mask = ConvMAEBase.draw_decoder_mask

    def __init__(self, input_size: tuple, mask_ratio: float = 0.9, decoder_mask_ratio: float = 0.0,
                 decoder_mask_type: str = "running_cell", patch: tuple = (2, 16, 16), dim: int = 768, depth: int = 12,
                 heads: int = 12, decoder_dim: int = 384, decoder_depth: int = 4, decoder_heads: int = 6):
        super().__init__()
        self.input_size, self.in_chans = tuple(input_size), 3
        self.grid_size = tuple(n // p for n, p in zip(input_size, patch))
        self.mask_ratio = mask_ratio
        self.decoder_mask_ratio, self.decoder_mask_type = decoder_mask_ratio, decoder_mask_type
        self.patch_embed = nn.Conv3d(self.in_chans, dim, patch, stride=patch)
        self.pos_embed = build_pos_embed(self.grid_size, dim, learnable=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = build_pos_embed(self.grid_size, decoder_dim, learnable=False)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, math.prod(patch) * self.in_chans)

    def draw_mask(self, x: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
        return draw_mask("tube", x.shape[0], self.grid_size, self.mask_ratio, generator, x.device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = tokens[~mask].view(x.shape[0], -1, tokens.shape[-1])
        for blk in self.blocks:
            x = blk(x)
        return self.forward_decoder(self.norm(x), mask, self.draw_decoder_mask(mask))


def _count_forward(model: nn.Module, inputs: tuple) -> float:
    flops = FlopCountAnalysis(model, inputs)
    flops.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_handle)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return flops.total() / 1e9


def _pretrain_mode(model: nn.Module, visible_only: bool, decoder_mask_ratio: float) -> str:
    decoder = f" dec@{decoder_mask_ratio:g}" if decoder_mask_ratio else ""
    return f"pretrain@{model.mask_ratio:g} {'visible-only' if visible_only else 'dense'}{decoder}"


def _row(name: str, mode: str, model: nn.Module, inputs: tuple) -> dict:
    # a decoder mask is drawn in training mode only (the global RNG, seeded: the count does not depend on it)
    torch.manual_seed(0)
    return dict(preset=name, mode=mode, input="x".join(map(str, model.input_size)),
                params=sum(p.numel() for p in model.parameters()) / 1e6, gflops=_count_forward(model, inputs))


def count(name: str, frames: int, img_size: int, mask_ratio: float = None, visible_only: bool = False,
          decoder_mask_ratio: float = 0.0) -> dict:
    """Params (M) and GFLOPs of one preset at batch size 1 (`visible_only` and `decoder_mask_ratio` pick a
    pretraining path)."""
    overrides = dict(img_size=img_size)
    if name.startswith("video"):
        overrides["num_frames"] = frames
    if is_pretraining(name):
        overrides.update(visible_only=visible_only, decoder_mask_ratio=decoder_mask_ratio)
        if mask_ratio is not None:
            overrides["mask_ratio"] = mask_ratio
    model = timm.create_model(name, **overrides).train(decoder_mask_ratio > 0)
    x = torch.randn(1, model.in_chans, *model.input_size)
    if not is_pretraining(model):
        return _row(name, "finetune", model, (x,))
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    return _row(name, _pretrain_mode(model, visible_only, decoder_mask_ratio), model, (x, mask))


def count_plain_vit(frames: int, img_size: int, mask_ratio: float = None, decoder_mask_ratio: float = 0.0) -> dict:
    """Params (M) and GFLOPs of `PlainViTMAE` on the clips and masks of the video presets."""
    model = PlainViTMAE((frames, img_size, img_size), 0.9 if mask_ratio is None else mask_ratio,
                        decoder_mask_ratio).train(decoder_mask_ratio > 0)
    x = torch.randn(1, model.in_chans, *model.input_size)
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    return _row(model.name, _pretrain_mode(model, True, decoder_mask_ratio), model, (x, mask))


def format_table(rows: list) -> str:
    header = f"{'preset':<42} {'mode':<28} {'input':<12} {'params (M)':>10} {'GFLOPs':>9}"
    lines = [header, "-" * len(header)]
    lines += [f"{r['preset']:<42} {r['mode']:<28} {r['input']:<12} {r['params']:>10.2f} {r['gflops']:>9.3f}"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="registered preset names")
    parser.add_argument("--frames", type=int, default=16, help="clip length for video presets")
    parser.add_argument("--img-size", type=int, default=224, help="input height and width")
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="mask ratio of pretraining presets (default: the preset's own)")
    parser.add_argument("--decoder-mask-ratio", type=float, default=0.5,
                        help="also count the pretraining forwards with this decoder mask ratio (0: without only)")
    parser.add_argument("--no-plain-vit", action="store_true",
                        help="leave out the plain ViT-B MAE of VideoMAE-B's shape (counted on the video clips)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if not 0 <= args.decoder_mask_ratio < 1:
        parser.error(f"--decoder-mask-ratio must be in [0, 1), got {args.decoder_mask_ratio}")
    decoder_ratios = (0.0, args.decoder_mask_ratio) if args.decoder_mask_ratio else (0.0,)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore's jit tracing is deprecated upstream
        rows = [count(name, args.frames, args.img_size, args.mask_ratio, visible_only, ratio)
                for name in args.presets for visible_only in ((False, True) if is_pretraining(name) else (False,))
                for ratio in (decoder_ratios if is_pretraining(name) else (0.0,))]
        if not args.no_plain_vit:
            rows += [count_plain_vit(args.frames, args.img_size, args.mask_ratio, ratio) for ratio in decoder_ratios]
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
