"""Depthwise convolution on the channels-last token grid, and visible-only execution.

`depthwise_conv` is the single entry point the conv blocks call; it dispatches to the Triton
kernel (`video_mcmae.models.kernels.dwconv`) for CUDA tensors when Triton imports, and to
PyTorch's grouped convolution elsewhere. `depthwise_conv_visible` is the same convolution
evaluated at the visible positions of a masked grid only, with masked inputs read as zero.

The backend can be forced with the `backend=` argument or the environment variable
`VIDEO_MCMAE_DWCONV` (`auto`, the default, `torch` or `triton`).
"""
import importlib
import importlib.util
import math
import os
from typing import Optional, Sequence

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
    _load_kernels()


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
    return _load_kernels().dwconv_rows(rows.contiguous(), w_kc, bias, positions.to(torch.int32),
                                       index_map.contiguous(), grid, ksize)


def _torch_visible(rows, index_map, weight, bias, positions):
    """Reference: scatter the rows into a zero canvas, convolve densely, gather the rows back."""
    positions = positions.long()
    canvas = rows.new_zeros(math.prod(index_map.shape), rows.shape[-1]).index_copy(0, positions, rows)
    y = _torch_dense(canvas.view(*index_map.shape, -1), weight, bias)
    return y.reshape(-1, rows.shape[-1]).index_select(0, positions)
