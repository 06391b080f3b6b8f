"""Building blocks: the masked convolution block of stages 1-2 and the transformer block of stage 3.

Conv blocks work on a channels-last grid `(B, *S, C)` (S = (T, H, W) or (H, W)), so norms and 1x1
convolutions are plain matrix products; `forward_visible` runs the same block on the visible rows
of a masked grid (`models.visible`). Their weights keep the official Conv shapes
(`conv1.weight (C, C, 1, 1)`) so official 2D checkpoints load unchanged.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp

from .dwconv import VisibleGrid, depthwise_conv, depthwise_conv_visible, resolve_backend


def conv_default_init(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """nn.Conv's default initialisation: kaiming-uniform (a=sqrt(5)) weight, bias uniform in
    +-1/sqrt(fan_in). The official conv blocks are plain nn.Conv layers and keep it."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(weight[0].numel())
    nn.init.uniform_(bias, -bound, bound)


class Pointwise(nn.Module):
    """1x1 convolution of a channels-last grid, computed as `F.linear` on the last dimension."""

    def __init__(self, in_dim: int, out_dim: int, spatial_dims: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim, *(1,) * spatial_dims))
        self.bias = nn.Parameter(torch.empty(out_dim))
        conv_default_init(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)


class DepthwiseConv(nn.Module):
    """Depthwise 'same' convolution of a channels-last grid; weight `(C, 1, *kernel_size)`.

    `backend`: 'auto', 'torch' or 'triton', resolved here, once (`models.dwconv.resolve_backend`).
    """

    def __init__(self, dim: int, kernel_size: tuple, backend: str = "auto"):
        super().__init__()
        self.backend = resolve_backend(backend, kernel_size)
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"conv_kernel_size must be odd in every dimension for 'same' padding, got {kernel_size}")
        self.weight = nn.Parameter(torch.empty(dim, 1, *kernel_size))
        self.bias = nn.Parameter(torch.empty(dim))
        conv_default_init(self.weight, self.bias)  # the official model uses a plain grouped nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.bias, self.backend)

    def forward_visible(self, rows: torch.Tensor, grid: VisibleGrid) -> torch.Tensor:
        """The convolution at the visible rows `(N, C)` of a masked grid (masked inputs read as zero)."""
        return depthwise_conv_visible(rows, grid.index_map, self.weight, self.bias, grid.positions, self.backend)


class ConvMlp(nn.Module):
    """Two 1x1 convolutions with GELU in between (conv-shaped weights, per-position compute)."""

    def __init__(self, dim: int, hidden_dim: int, spatial_dims: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Pointwise(dim, hidden_dim, spatial_dims)
        self.act = nn.GELU()
        self.fc2 = Pointwise(hidden_dim, dim, spatial_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvBlock(nn.Module):
    """Masked convolution block: x + conv2(dwconv(keep * conv1(norm1(x)))), then x + mlp(norm2(x)).

    `keep` (broadcastable to `(B, *S, 1)`, 1 = visible) zeroes masked positions right before the only
    operation that reads neighbours, so no visible output depends on a masked input.
    """

    def __init__(self, dim: int, kernel_size: tuple, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, dwconv_backend: str = "auto"):
        super().__init__()
        spatial_dims = len(kernel_size)
        # eps 1e-5 (nn.LayerNorm's default) as in the official conv blocks; the transformer blocks use 1e-6
        self.norm1 = nn.LayerNorm(dim)
        self.conv1 = Pointwise(dim, dim, spatial_dims)
        self.conv2 = Pointwise(dim, dim, spatial_dims)
        self.attn = DepthwiseConv(dim, kernel_size, dwconv_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), spatial_dims, drop)

    def forward(self, x: torch.Tensor, keep: torch.Tensor = None) -> torch.Tensor:
        y = self.conv1(self.norm1(x))
        if keep is not None:
            y = y * keep
        x = x + self.drop_path(self.conv2(self.attn(y)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_visible(self, rows: torch.Tensor, grid: VisibleGrid) -> torch.Tensor:
        """`forward` at the visible rows `(N, C)` of a masked grid: equal to the dense block's values
        there, with the masked positions zeroed before the depthwise conv."""
        batch = grid.index_map.shape[0]

        def drop_path(value):  # per sample, as in the dense block
            return self.drop_path(value.view(batch, -1, value.shape[-1])).view(value.shape)

        y = self.attn.forward_visible(self.conv1(self.norm1(rows)), grid)
        rows = rows + drop_path(self.conv2(y))
        return rows + drop_path(self.mlp(self.norm2(rows)))


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(x, "b h n d -> b n (h d)")))


class Block(nn.Module):
    """Pre-norm transformer block (official key layout: norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
