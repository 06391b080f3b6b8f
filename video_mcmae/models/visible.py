"""Where the conv stages run: the whole grid (`DenseLayout`) or the visible positions only
(`VisibleLayout`), side by side.

The encoder has one stage loop (`ConvViTEncoder.forward_stages`); a layout says how each of its
steps acts on the values it carries:

- `DenseLayout`: channels-last grids `(B, *S, C)`. Classifiers run it without a mask. With a mask it
  is the dense reference of pretraining: each conv block zeroes the masked positions right before
  its depthwise conv, and only the visible stage-3 tokens come out.
- `VisibleLayout` (pretraining's default, `visible_only=True`): rows `(N, C)` at the visible positions
  only, with the same values as the dense reference. Rows are ordered hierarchically: the visible
  stage-3 tokens in (sample, token) order (the order of `tokens[~mask]`), then each token's stage-2
  children, then each of those's stage-1 children, each child set in row-major order of its stride
  box. A stride (merge) conv of a visible cell is then a matrix product of its children's rows,
  which are consecutive (`embed.strided_conv_rows`).
"""
import math
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from .dwconv import VisibleGrid
from .embed import channels_first, flatten_tokens, strided_conv_rows


class DenseLayout:
    """Every position of the grid; `keeps` are float keep masks (1 = visible) per conv stage."""

    def __init__(self, mask: Optional[torch.Tensor] = None, keeps: Sequence = (None, None)):
        self.mask = mask
        self.keeps = tuple(keeps)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1)

    def embed(self, patch_embed: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return patch_embed(channels_first(x))

    def block(self, block: nn.Module, x: torch.Tensor, stage: int) -> torch.Tensor:
        keep = self.keeps[stage]
        return block(x, None if keep is None else keep.to(x.dtype))

    def stage(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return x

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self._visible(flatten_tokens(x))

    def positions(self, table: torch.Tensor) -> torch.Tensor:
        return table if self.mask is None else self._visible(table.expand(self.mask.shape[0], -1, -1))

    def fuse(self, stage1: torch.Tensor, stage2: torch.Tensor, decode1: nn.Module, decode2: nn.Module) -> torch.Tensor:
        """Multi-scale fusion: stage-1/2 grids projected onto the stage-3 tokens."""
        fused = (flatten_tokens(decode1(channels_first(stage1)).movedim(1, -1))
                 + flatten_tokens(decode2(channels_first(stage2)).movedim(1, -1)))
        return self._visible(fused)

    def _visible(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return tokens
        return tokens[~self.mask].reshape(tokens.shape[0], -1, tokens.shape[-1])


class VisibleStage(NamedTuple):
    """A stage's output at its visible positions: rows `(N, C)` in the hierarchical order."""
    rows: torch.Tensor
    grid: VisibleGrid


class VisibleLayout:
    """The visible positions of `mask` (bool `(B, L3)`, True = masked) at every stage."""

    def __init__(self, mask: torch.Tensor, grid_size: tuple, strides: tuple, stage_grids: Sequence[tuple]):
        self.batch = mask.shape[0]
        self.grid_size, self.strides = tuple(grid_size), tuple(strides)
        self.sample, self.token = torch.nonzero(~mask, as_tuple=True)
        self.coords3 = torch.stack([(self.token // math.prod(grid_size[d + 1:])) % size
                                    for d, size in enumerate(grid_size)], dim=1)
        _, s2, s3 = strides
        coords2 = _children(self.coords3, s3)
        self.grids = (
            _visible_grid(self.sample.repeat_interleave(math.prod(s3) * math.prod(s2)), _children(coords2, s2),
                          self.batch, stage_grids[0]),
            _visible_grid(self.sample.repeat_interleave(math.prod(s3)), coords2, self.batch, stage_grids[1]),
        )

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels under the visible tokens as rows `(N1 * prod(s1), C_in)`, stage-1 cells in row
        order and each cell's pixels in row-major order."""
        nd = len(self.grid_size)
        s1, s2, s3 = self.strides
        patch = [a * b * c for a, b, c in zip(s1, s2, s3)]
        split = [size for d in range(nd) for size in (self.grid_size[d], patch[d])]
        grid_view = x.reshape(x.shape[0], x.shape[1], *split)
        index = (self.sample, slice(None)) + tuple(i for d in range(nd) for i in (self.coords3[:, d], slice(None)))
        cubes = grid_view[index]  # (N3, C_in, *patch): the advanced indices move to the front
        cubes = cubes.reshape(cubes.shape[0], cubes.shape[1], *[n for d in range(nd) for n in (s3[d], s2[d], s1[d])])
        # (N3, C, [s3 s2 s1] per dim) -> (N3, s3..., s2..., s1..., C)
        order = [0] + [2 + 3 * d + level for level in range(3) for d in range(nd)] + [1]
        return cubes.permute(order).reshape(-1, x.shape[1])

    def embed(self, patch_embed: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        return patch_embed.forward_rows(rows)

    def block(self, block: nn.Module, rows: torch.Tensor, stage: int) -> torch.Tensor:
        return block.forward_visible(rows, self.grids[stage])

    def stage(self, rows: torch.Tensor, stage: int) -> VisibleStage:
        return VisibleStage(rows, self.grids[stage])

    def tokens(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.view(self.batch, -1, rows.shape[-1])

    def positions(self, table: torch.Tensor) -> torch.Tensor:
        return table[0, self.token].view(self.batch, -1, table.shape[-1])

    def fuse(self, stage1: VisibleStage, stage2: VisibleStage, decode1: nn.Module, decode2: nn.Module) -> torch.Tensor:
        """`DenseLayout.fuse` at the visible stage-3 tokens: (B, N_vis, C3)."""
        nd = len(self.grid_size)
        _, s2, s3 = self.strides
        # stage-1 rows per token are ordered (s3 box, s2 box); the decode conv's kernel is s3*s2 per
        # dim with the s3 offset outer, so interleave the two boxes dimension by dimension
        rows1 = stage1.rows.reshape(-1, *s3, *s2, stage1.rows.shape[-1])
        order = [0] + [i for d in range(nd) for i in (1 + d, 1 + nd + d)] + [1 + 2 * nd]
        rows1 = rows1.permute(order).reshape(-1, stage1.rows.shape[-1])
        fused = strided_conv_rows(decode1, rows1) + strided_conv_rows(decode2, stage2.rows)
        return fused.view(self.batch, -1, fused.shape[-1])


def _box_offsets(stride: Sequence[int], device) -> torch.Tensor:
    """(prod(stride), nd) offsets of the cells of a stride box, row-major."""
    axes = torch.meshgrid(*(torch.arange(s, device=device) for s in stride), indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, len(stride))


def _children(coords: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """(N, nd) cell coordinates -> (N * prod(stride), nd) coordinates of their children."""
    step = torch.tensor(stride, device=coords.device)
    return (coords[:, None] * step + _box_offsets(stride, coords.device)[None]).reshape(-1, coords.shape[1])


def _visible_grid(sample: torch.Tensor, coords: torch.Tensor, batch: int, grid: Sequence[int]) -> VisibleGrid:
    """Index map and positions of rows at `coords` (N, nd) of samples `sample` (N,)."""
    linear = sample
    for d, size in enumerate(grid):
        linear = linear * size + coords[:, d]
    index_map = torch.full((batch * math.prod(grid),), -1, dtype=torch.int32, device=coords.device)
    index_map[linear] = torch.arange(linear.numel(), dtype=torch.int32, device=coords.device)
    return VisibleGrid(index_map.view(batch, *grid), linear.to(torch.int32))
