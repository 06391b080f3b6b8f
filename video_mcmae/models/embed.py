"""Patch/cube embeddings and position tables (2D sin-cos, separable spatio-temporal sin-cos).

Position tables are `nn.Parameter`s of shape `(1, L, C)` in token order `(t, h, w)` / `(h, w)`
(official 2D key `pos_embed`); `requires_grad` says whether a table is learnable. Fixed tables are
rebuilt from the grid, never resized; learnable ones are interpolated on their grid.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim) table: [sin(p * w_i), cos(p * w_i)] with w_i = 10000^(-i / (dim/2))."""
    if dim % 2:
        raise ValueError(f"a 1D sin-cos table needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid: tuple) -> torch.Tensor:
    """(H*W, dim) table; the first half of the channels encodes w and the second h (MAE's layout)."""
    if dim % 4:
        raise ValueError(f"a 2D sin-cos table needs a width divisible by 4, got {dim}")
    h, w = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, w.flatten()), sincos_1d(dim // 2, h.flatten())], dim=1)


def sincos_3d(dim: int, grid: tuple) -> torch.Tensor:
    """(T*H*W, dim) spatio-temporal table, separable: 3/4 of the channels carry the 2D spatial code
    (the same at every time step), 1/4 the temporal code (the same at every position)."""
    if dim % 16:
        raise ValueError(f"a spatio-temporal sin-cos table needs a width divisible by 16, got {dim}")
    t, h, w = grid
    spatial_dim = dim // 4 * 3
    spatial = sincos_2d(spatial_dim, (h, w))[None].expand(t, -1, -1)
    temporal = sincos_1d(dim - spatial_dim, torch.arange(t))[:, None].expand(-1, h * w, -1)
    return torch.cat([spatial, temporal], dim=-1).flatten(0, 1)


def build_pos_embed(grid: tuple, dim: int, learnable: bool) -> nn.Parameter:
    """A `(1, L, dim)` sin-cos position table for a (H, W) or (T, H, W) grid; frozen unless `learnable`."""
    table = sincos_3d(dim, grid) if len(grid) == 3 else sincos_2d(dim, grid)
    return nn.Parameter(table[None], requires_grad=learnable)


def resize_pos_table(table: torch.Tensor, src_grid: tuple, dst_grid: tuple) -> torch.Tensor:
    """Interpolate a `(1, prod(src_grid), C)` table to `dst_grid` (bicubic in 2D, trilinear in 3D)."""
    if math.prod(src_grid) != table.shape[1]:
        raise ValueError(f"position table of shape {tuple(table.shape)} does not fit the grid {tuple(src_grid)}")
    mode = "bicubic" if len(src_grid) == 2 else "trilinear"
    grid = table.reshape(1, *src_grid, -1).movedim(-1, 1).float()
    grid = F.interpolate(grid, size=tuple(dst_grid), mode=mode, align_corners=False)
    return grid.movedim(1, -1).flatten(1, -2).to(table.dtype)


class PatchEmbed(nn.Module):
    """Non-overlapping patch/cube embedding (conv with kernel = stride) + LayerNorm + GELU.

    `forward` takes a channels-first input `(B, C, *S)` and returns the channels-last grid
    `(B, *S', C')`; `forward_rows` embeds visible cells given as rows (visible-only execution).
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: tuple):
        super().__init__()
        conv = nn.Conv3d if len(stride) == 3 else nn.Conv2d
        self.stride = tuple(stride)
        self.proj = conv(in_chans, embed_dim, kernel_size=self.stride, stride=self.stride)
        self.norm = nn.LayerNorm(embed_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.proj(x).movedim(1, -1)))

    def forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """`forward` of cells whose input cells are consecutive rows: (N * prod(stride), C) -> (N, C')."""
        return self.act(self.norm(strided_conv_rows(self.proj, rows)))


def strided_conv_rows(conv: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """A kernel = stride convolution evaluated on cells whose input cells are consecutive rows, in
    row-major order of the stride box: (N * prod(kernel), C_in) -> (N, C_out)."""
    weight = conv.weight
    box = math.prod(weight.shape[2:])
    patches = rows.reshape(-1, box, rows.shape[-1]).transpose(1, 2).flatten(1)
    return F.linear(patches, weight.flatten(1), conv.bias)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, C, *S)."""
    return x.movedim(-1, 1)


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, prod(S), C) in row-major (t, h, w) order."""
    return rearrange(x, "b ... c -> b (...) c")
