"""Depthwise 'same' convolution of a channels-last grid: backend choice and dispatch.

`depthwise_conv` is the dense convolution the conv blocks call; `depthwise_conv_visible` is the
same convolution evaluated at the visible positions of a masked grid only, with masked inputs read
as zero. Both run either the Triton kernel (`video_mcmae.models.kernels.dwconv`, CUDA tensors) or
PyTorch's grouped convolution.

Which one runs is the models' `dwconv_backend` argument (config `model.dwconv_backend`), resolved
once when a conv block is built (`resolve_backend`): `torch` or `triton` forces a backend; `auto`
(the default) takes the environment variable `VIDEO_MCMAE_DWCONV` when it is set, as a user
override, and otherwise stays `auto`: Triton for CUDA tensors, when it imports. The kernel takes
odd kernel sizes up to 7 (2D, or 3D up to 7x7x7); `auto` sends larger kernels to torch, `triton`
rejects them. Importing this module loads nothing: the kernels are imported when a block that may
use them is built on a machine with CUDA (so that torch.compile never traces the import), or at
the first call that runs them.

On the CPU in fp32 (or fp64) the torch backend computes the input gradient as the convolution
with the flipped kernel (`_CpuDepthwise`): torch's own is 15-30x the cost of the forward.

Determinism: the Triton kernels sum in a fixed order. On the CPU, torch 2.14's bf16 depthwise
Conv3d weight gradient of a channels-last input reads uninitialised memory on grids shallower than
the kernel (e.g. 48 channels over (2, 4, 4) with a 3x5x5 kernel: values up to 1e31, different from
call to call by what the allocator hands out, at any thread count); the torch backend gives it a
channels-first input, whose gradient is right and the same bits on every call.
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


# Filled on first use, never at import: the kernels' module, and whether it imports.
_kernels = None
_triton_usable: Optional[bool] = None


def load_kernels():
    """Import the Triton kernels on first use: Triton fixes compiled-vs-interpreted at import."""
    global _kernels
    if _kernels is None:
        _kernels = importlib.import_module("video_mcmae.models.kernels.dwconv")
    return _kernels


def triton_available() -> bool:
    """Whether the Triton kernels import; decided the first time it is asked."""
    global _triton_usable
    if _triton_usable is None:
        _triton_usable = importlib.util.find_spec("triton") is not None
        if _triton_usable:
            try:
                load_kernels()
            except ImportError as err:  # a broken triton install: fall back to torch, and say so once
                warnings.warn(f"triton is installed but does not import ({err}); depthwise convs use torch")
                _triton_usable = False
    return _triton_usable


class VisibleGrid(NamedTuple):
    """The visible rows of a masked grid: int32 `index_map (B, *S)` (the row of each position, -1 =
    masked) and int32 `positions (N,)` (the linear grid position of each row)."""
    index_map: torch.Tensor
    positions: torch.Tensor


def check_backend(backend: str, source: str = "dwconv_backend") -> None:
    if backend not in BACKENDS:
        raise ValueError(f"depthwise-conv backend must be one of {BACKENDS}, got {backend!r} ({source})")


def _check_kernel(kernel: Sequence[int]) -> None:
    if max(kernel) > MAX_KERNEL:
        raise ValueError(f"the Triton depthwise-conv kernel supports kernel sizes up to "
                         f"{MAX_KERNEL}, got {tuple(kernel)}")


def resolve_backend(backend: str, kernel: Sequence[int]) -> str:
    """The backend of a conv block with kernel size `kernel`, decided when the block is built:
    'torch', 'triton', or 'auto' (Triton for CUDA tensors). The environment variable is read here
    and nowhere else."""
    source = "dwconv_backend"
    if backend == "auto" and os.environ.get(BACKEND_ENV):
        backend, source = os.environ[BACKEND_ENV], f"environment variable {BACKEND_ENV}"
    check_backend(backend, source)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("depthwise-conv backend 'triton' was requested but triton is not installed")
        _check_kernel(kernel)
    elif backend == "auto" and not (torch.cuda.is_available() and max(kernel) <= MAX_KERNEL and triton_available()):
        return "torch"
    return backend


def _runs_triton(backend: str, x: torch.Tensor, kernel: Sequence[int]) -> bool:
    """Whether one call with `backend` ('auto', 'torch' or 'triton') runs the Triton kernel."""
    check_backend(backend, "argument backend=")
    if backend == "triton":
        _check_kernel(kernel)
        return True
    return backend == "auto" and x.is_cuda and max(kernel) <= MAX_KERNEL and triton_available()


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


def _same_padding(weight):
    return tuple(k // 2 for k in weight.shape[2:])


def _conv_same(x, weight, bias):
    """torch's depthwise 'same' convolution of a channels-first `x` (2D or 3D)."""
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    return conv(x, weight, bias, padding=_same_padding(weight), groups=x.shape[1])


class _CpuDepthwise(torch.autograd.Function):
    """torch's depthwise 'same' convolution with a cheaper input gradient on the CPU.

    torch computes a depthwise Conv3d's input gradient some 15-30x slower than the forward (8.5 ms
    against 0.5 ms for 16 clips of 32 channels over (4, 12, 12), one thread), about a fifth of a
    tiny-preset finetuning step. With stride 1 and 'same' padding that gradient is itself a
    depthwise convolution of the output gradient with the flipped kernel; the weight and bias
    gradients stay torch's own."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _conv_same(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        nd, groups, padding = x.dim() - 2, x.shape[1], _same_padding(weight)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_same(grad, weight.flip(tuple(range(2, weight.dim()))), None)
        want_w, want_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [groups] if ctx.has_bias else None, [1] * nd, list(padding), [1] * nd, False,
                [0] * nd, groups, [False, want_w, want_b])
        return grad_x, grad_w, grad_b


def _torch_dense(x, weight, bias):
    x = x.movedim(-1, 1)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if x.device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return _CpuDepthwise.apply(x, weight, bias).movedim(1, -1)
    if x.device.type == "cpu" and x.dim() == 5 and dtype == torch.bfloat16:
        # torch's CPU bf16 depthwise Conv3d weight gradient of a channels-last input reads
        # uninitialised memory (values up to 1e34, or not, by what the allocator hands out):
        # give it a channels-first one
        x = x.contiguous()
    return _conv_same(x, weight, bias).movedim(1, -1)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   backend: str = "auto") -> torch.Tensor:
    """Depthwise 'same' convolution of a channels-last grid.

    x: (B, *S, C) with S = (T, H, W) or (H, W); weight: (C, 1, *k) with odd k; bias: (C,) or None.
    Returns (B, *S, C).
    """
    kernel = _check(x, weight, bias, x.dim() - 2)
    if not _runs_triton(backend, x, kernel):
        return _torch_dense(x, weight, bias)
    x = _autocast(x)
    grid, ksize = _grid3d(x.shape[1:-1], kernel)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    w_kc = weight.reshape(weight.shape[0], -1).t().contiguous()
    y = load_kernels().dwconv_rows(rows, w_kc, bias, None, None, grid, ksize)
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
                           backend: str = "auto") -> torch.Tensor:
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
    if not _runs_triton(backend, rows, kernel):
        return _torch_visible(rows, index_map, weight, bias, positions)
    rows = _autocast(rows)
    grid, ksize = _grid3d(index_map.shape[1:], kernel)
    w_kc = weight.reshape(weight.shape[0], -1).t().contiguous()
    return load_kernels().dwconv_rows(rows.contiguous(), w_kc, bias, positions.to(torch.int32).contiguous(),
                                       index_map.contiguous(), grid, ksize)


def _torch_visible(rows, index_map, weight, bias, positions):
    """Reference: scatter the rows into a zero canvas, convolve densely, gather the rows back."""
    positions = positions.long()
    canvas = rows.new_zeros(math.prod(index_map.shape), rows.shape[-1]).index_copy(0, positions, rows)
    y = _torch_dense(canvas.view(*index_map.shape, -1), weight, bias)
    return y.reshape(-1, rows.shape[-1]).index_select(0, positions)
