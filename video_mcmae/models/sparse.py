"""Depthwise convolution on the channels-last token grid, and visible-only execution.

`depthwise_conv` is the single entry point the conv blocks call; it dispatches to the Triton
kernel (`video_mcmae.models.kernels.dwconv`) for CUDA tensors when Triton imports, and to
PyTorch's grouped convolution elsewhere. `depthwise_conv_visible` is the same convolution
evaluated at the visible positions of a masked grid only, with masked inputs read as zero.

The backend can be forced with the `backend=` argument or the environment variable
`VIDEO_MCMAE_DWCONV` (`auto`, the default, `torch` or `triton`). The kernel takes odd kernel
sizes up to 7 (2D, or 3D up to 7x7x7); `auto` sends larger kernels to torch, `triton` rejects them.

`visible_conv_stages` / `visible_msd` run a pretraining model's conv stages and multi-scale fusion
on the visible positions only (see "Visible-only execution" in ARCHITECTURE.md).
"""
import importlib
import importlib.util
import math
import os
import warnings
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

BACKEND_ENV = "VIDEO_MCMAE_DWCONV"
BACKENDS = ("auto", "torch", "triton")
MAX_KERNEL = 7

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_kernels = None


def _load_kernels():
    """Import the Triton kernels on first use: Triton fixes compiled-vs-interpreted at import."""
    global _kernels
    if _kernels is None:
        _kernels = importlib.import_module("video_mcmae.models.kernels.dwconv")
    return _kernels


if _HAS_TRITON and torch.cuda.is_available():
    # Load now rather than on first call, so that torch.compile never traces the import.
    try:
        _load_kernels()
    except ImportError as err:  # a broken triton install: fall back to torch, and say so once
        warnings.warn(f"triton is installed but does not import ({err}); depthwise convs use torch")
        _HAS_TRITON = False


def _resolve_backend(backend: Optional[str], x: torch.Tensor, kernel: Sequence[int]) -> str:
    backend = backend or os.environ.get(BACKEND_ENV, "auto")
    if backend not in BACKENDS:
        raise ValueError(f"depthwise-conv backend must be one of {BACKENDS}, got {backend!r} "
                         f"(argument backend= or environment variable {BACKEND_ENV})")
    if backend == "auto":
        usable = _HAS_TRITON and x.is_cuda and max(kernel) <= MAX_KERNEL
        return "triton" if usable else "torch"
    if backend == "triton":
        if not _HAS_TRITON:
            raise RuntimeError("depthwise-conv backend 'triton' was requested but triton is not installed")
        if max(kernel) > MAX_KERNEL:
            raise ValueError(f"the Triton depthwise-conv kernel supports kernel sizes up to "
                             f"{MAX_KERNEL}, got {tuple(kernel)}")
    return backend


def _check(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], nd: int):
    """Validate shapes; return the kernel size."""
    if nd not in (2, 3):
        raise ValueError(f"depthwise conv needs a 2D or 3D grid, got {nd} spatial dims")
    channels = x.shape[-1]
    if weight.dim() != nd + 2 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(f"depthwise-conv weight must be (C, 1, *k) with C={channels} and {nd} "
                         f"kernel dims, got {tuple(weight.shape)}")
    kernel = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"depthwise conv with 'same' padding needs odd kernel sizes, got {kernel}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"depthwise-conv bias must be ({channels},), got {tuple(bias.shape)}")
    return kernel


def _grid3d(shape: Sequence[int], kernel: Sequence[int]):
    """(T, H, W) and (kT, kH, kW); a 2D grid is a 3D one of depth 1."""
    if len(shape) == 2:
        return [1, *shape], [1, *kernel]
    return list(shape), list(kernel)


def _autocast(x: torch.Tensor) -> torch.Tensor:
    # cuDNN's conv would run in the autocast dtype; match it (the kernel accumulates in fp32).
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def _torch_dense(x, weight, bias):
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    padding = tuple(k // 2 for k in weight.shape[2:])
    y = conv(x.movedim(-1, 1), weight, bias, padding=padding, groups=x.shape[-1])
    return y.movedim(1, -1)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   backend: Optional[str] = None) -> torch.Tensor:
    """Depthwise 'same' convolution of a channels-last grid.

    x: (B, *S, C) with S = (T, H, W) or (H, W); weight: (C, 1, *k) with odd k; bias: (C,) or None.
    Returns (B, *S, C).
    """
    kernel = _check(x, weight, bias, x.dim() - 2)
    if _resolve_backend(backend, x, kernel) == "torch":
        return _torch_dense(x, weight, bias)
    x = _autocast(x)
    grid, ksize = _grid3d(x.shape[1:-1], kernel)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    w_kc = weight.reshape(weight.shape[0], -1).t().contiguous()
    y = _load_kernels().dwconv_rows(rows, w_kc, bias, None, None, grid, ksize)
    return y.view(x.shape)


def visible_positions(index_map: torch.Tensor, num_rows: Optional[int] = None) -> torch.Tensor:
    """Linear grid position of every row of an index map (int32, -1 = masked)."""
    flat = index_map.reshape(-1)
    where = torch.nonzero(flat >= 0).squeeze(1)
    rows = flat[where].long()
    if num_rows is None:
        num_rows = where.numel()
    elif num_rows != where.numel():
        raise ValueError(f"index_map marks {where.numel()} visible positions but there are {num_rows} rows")
    return torch.zeros(num_rows, dtype=torch.int32, device=flat.device).index_copy_(
        0, rows, where.to(torch.int32))


def depthwise_conv_visible(rows: torch.Tensor, index_map: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor] = None,
                           positions: Optional[torch.Tensor] = None,
                           backend: Optional[str] = None) -> torch.Tensor:
    """Depthwise 'same' convolution of a masked grid, evaluated at its visible positions only.

    rows: (N, C) the visible inputs; index_map: int32 (B, *S), the row of each grid position or
    -1 where masked (masked inputs are zero); positions: optional int32 (N,) linear grid position
    of each row (the inverse of index_map; computed when not given). Returns (N, C).
    """
    if rows.dim() != 2 or rows.shape[-1] != weight.shape[0]:
        raise ValueError(f"visible rows must be (N, C) with C={weight.shape[0]}, got {tuple(rows.shape)}")
    if index_map.dtype != torch.int32:
        raise ValueError(f"index_map must be int32, got {index_map.dtype}")
    kernel = _check(rows, weight, bias, index_map.dim() - 1)
    if positions is None:
        positions = visible_positions(index_map, rows.shape[0])
    if positions.shape != (rows.shape[0],):
        raise ValueError(f"positions must be ({rows.shape[0]},), got {tuple(positions.shape)}")
    if _resolve_backend(backend, rows, kernel) == "torch":
        return _torch_visible(rows, index_map, weight, bias, positions)
    rows = _autocast(rows)
    grid, ksize = _grid3d(index_map.shape[1:], kernel)
    w_kc = weight.reshape(weight.shape[0], -1).t().contiguous()
    return _load_kernels().dwconv_rows(rows.contiguous(), w_kc, bias, positions.to(torch.int32).contiguous(),
                                       index_map.contiguous(), grid, ksize)


def _torch_visible(rows, index_map, weight, bias, positions):
    """Reference: scatter the rows into a zero canvas, convolve densely, gather the rows back."""
    positions = positions.long()
    canvas = rows.new_zeros(math.prod(index_map.shape), rows.shape[-1]).index_copy(0, positions, rows)
    y = _torch_dense(canvas.view(*index_map.shape, -1), weight, bias)
    return y.reshape(-1, rows.shape[-1]).index_select(0, positions)


# -- visible-only execution of the conv stages ------------------------------------------------------
#
# Rows are ordered hierarchically: the visible stage-3 tokens in (sample, token) order (the order of
# `tokens[~mask]`), then each token's stage-2 children, then each of those's stage-1 children, each
# child set in row-major order of its stride box. A stride (merge) conv on a visible cell is then a
# matrix product of its children's rows, which are consecutive.


class VisibleGrid(NamedTuple):
    """Visible rows of one stage: int32 `index_map (B, *S)` (row or -1) and `positions (N,)`."""
    index_map: torch.Tensor
    positions: torch.Tensor


class VisibleStage(NamedTuple):
    """A stage's output at its visible positions: rows `(N, C)` in the hierarchical order."""
    rows: torch.Tensor
    grid: VisibleGrid


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


def _merge(rows: torch.Tensor, conv: torch.nn.Module) -> torch.Tensor:
    """A kernel = stride conv evaluated on cells whose children are consecutive rows:
    (N * prod(k), C_in) -> (N, C_out)."""
    weight = conv.weight
    box = math.prod(weight.shape[2:])
    patches = rows.reshape(-1, box, rows.shape[-1]).transpose(1, 2).flatten(1)
    return F.linear(patches, weight.flatten(1), conv.bias)


def _embed_patches(model, x: torch.Tensor, sample: torch.Tensor, coords3: torch.Tensor) -> torch.Tensor:
    """Stage-1 input patches of the visible tokens in stage-1 row order: (N1, C_in * prod(s1))."""
    nd = coords3.shape[1]
    patch = model.patch_size_nd
    split = [size for d in range(nd) for size in (model.grid_size[d], patch[d])]
    grid_view = x.reshape(x.shape[0], x.shape[1], *split)
    index = (sample, slice(None)) + tuple(i for d in range(nd) for i in (coords3[:, d], slice(None)))
    cubes = grid_view[index]  # (N3, C_in, *patch): the advanced indices move to the front
    s1, s2, s3 = model.strides
    cubes = cubes.reshape(cubes.shape[0], cubes.shape[1], *[n for d in range(nd) for n in (s3[d], s2[d], s1[d])])
    # (N3, C, [s3 s2 s1] per dim) -> (N3, s3..., s2..., C, s1...)
    order = ([0] + [2 + 3 * d for d in range(nd)] + [3 + 3 * d for d in range(nd)] + [1]
             + [4 + 3 * d for d in range(nd)])
    return cubes.permute(order).reshape(-1, x.shape[1] * math.prod(s1))


def _conv_blocks(blocks, rows: torch.Tensor, grid: VisibleGrid, batch: int) -> torch.Tensor:
    """`ConvBlock.forward` on visible rows; drop-path acts per sample as in the dense block."""
    def per_sample(fn, value):
        return fn(value.view(batch, -1, value.shape[-1])).view(value.shape)

    for blk in blocks:
        y = blk.conv1(blk.norm1(rows))
        y = depthwise_conv_visible(y, grid.index_map, blk.attn.weight, blk.attn.bias, grid.positions)
        rows = rows + per_sample(blk.drop_path, blk.conv2(y))
        rows = rows + per_sample(blk.drop_path, blk.mlp(blk.norm2(rows)))
    return rows


def visible_conv_stages(model, x: torch.Tensor, mask: torch.Tensor) -> tuple:
    """`ConvMAEBase.forward_conv_stages` computed at visible positions only.

    Returns (stage 1, stage 2) as `VisibleStage`s and the visible stage-3 tokens `(B, N_vis, C3)`
    with the position table, equal to the dense masked path's values.
    """
    batch = x.shape[0]
    sample, token = torch.nonzero(~mask, as_tuple=True)
    coords3 = torch.stack([(token // math.prod(model.grid_size[d + 1:])) % size
                           for d, size in enumerate(model.grid_size)], dim=1)
    _, s2, s3 = model.strides
    grid2 = _visible_grid(sample.repeat_interleave(math.prod(s3)), _children(coords3, s3), batch,
                          model.stage_grids[1])
    grid1 = _visible_grid(sample.repeat_interleave(math.prod(s3) * math.prod(s2)),
                          _children(_children(coords3, s3), s2), batch, model.stage_grids[0])

    def embed(pe, patches):
        return pe.act(pe.norm(F.linear(patches, pe.proj.weight.flatten(1), pe.proj.bias)))

    rows = embed(model.patch_embed1, _embed_patches(model, x, sample, coords3))
    stage1 = VisibleStage(_conv_blocks(model.blocks1, rows, grid1, batch), grid1)
    rows = model.patch_embed2.act(model.patch_embed2.norm(_merge(stage1.rows, model.patch_embed2.proj)))
    stage2 = VisibleStage(_conv_blocks(model.blocks2, rows, grid2, batch), grid2)
    tokens = model.patch_embed3.act(model.patch_embed3.norm(_merge(stage2.rows, model.patch_embed3.proj)))
    tokens = model.patch_embed4(tokens) + model.pos_embed[0, token]
    return stage1, stage2, tokens.view(batch, -1, tokens.shape[-1])


def visible_msd(model, stage1: VisibleStage, stage2: VisibleStage, mask: torch.Tensor) -> torch.Tensor:
    """`ConvMAEBase.forward_msd` at the visible stage-3 tokens: (B, N_vis, C3)."""
    nd = len(model.grid_size)
    _, s2, s3 = model.strides
    # stage-1 rows per token are ordered (s3 box, s2 box); the decode conv's kernel is s3*s2 per
    # dim with the s3 offset outer, so interleave the two boxes dimension by dimension
    rows1 = stage1.rows.reshape(-1, *s3, *s2, stage1.rows.shape[-1])
    order = [0] + [i for d in range(nd) for i in (1 + d, 1 + nd + d)] + [1 + 2 * nd]
    rows1 = rows1.permute(order).reshape(-1, stage1.rows.shape[-1])
    fused = _merge(rows1, model.stage1_output_decode) + _merge(stage2.rows, model.stage2_output_decode)
    return fused.view(mask.shape[0], -1, fused.shape[-1])
