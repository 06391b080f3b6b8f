"""Depthwise 'same' convolution on a channels-last token grid, in Triton.

Every tensor the kernels see is a row matrix `(N, C)` (one row per grid position, channels
contiguous) over a grid `(B, T, H, W)`; a 2D grid is the case T = 1 with a kernel depth of 1.

- dense: row r is grid position r;
- visible-only: `positions[r]` is the linear grid position of row r and `index_map[p]` the row at
  grid position p (-1 = masked). Outputs exist at the rows only and masked neighbours read as zero.

A program owns a tile of BLOCK_P output rows x BLOCK_C channels and accumulates every tap in fp32,
so a channel vector is read as one contiguous segment. The input gradient is the same kernel with
the taps reversed (the adjoint of a 'same' convolution with an odd kernel is the correlation with
the flipped kernel, over the same neighbour structure). The weight gradient is written as
per-chunk partial sums and reduced in a fixed order, so it is deterministic.

The kernels are wrapped as `torch.library` custom ops with autograd and fake (meta) kernels, so
`torch.compile` treats them as opaque calls instead of tracing into Triton.
"""
from typing import List, Optional

import torch
import triton
import triton.language as tl

# Upper bound on weight-gradient chunks: bounds the fp32 partial-sum buffer (chunks x taps x C).
_MAX_WGRAD_CHUNKS = 512


@triton.jit
def _grid_coords(p, T, H, W):
    return (p // (H * W)) % T, (p // W) % H, p % W


@triton.jit
def _dwconv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, pos_ptr, map_ptr,
    n_rows, C, T, H, W,
    KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    HAS_BIAS: tl.constexpr, VISIBLE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < n_rows
    col_ok = cols < C
    col_ok2 = col_ok[None, :]
    x_cols = x_ptr + cols[None, :]
    if VISIBLE:
        p = tl.load(pos_ptr + rows, mask=row_ok, other=0)
    else:
        p = rows
    t, h, w = _grid_coords(p, T, H, W)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    # neighbour bounds and linear positions are built up one kernel axis at a time
    w_tap = w_ptr + cols
    for kt in range(KT):
        tt = t + (kt - KT // 2)
        ok_t = row_ok & (tt >= 0) & (tt < T)
        q_t = p + (kt - KT // 2) * H * W
        for kh in range(KH):
            hh = h + (kh - KH // 2)
            ok_th = ok_t & (hh >= 0) & (hh < H)
            q_th = q_t + (kh - KH // 2) * W
            for kw in range(KW):
                ww = w + (kw - KW // 2)
                ok = ok_th & (ww >= 0) & (ww < W)
                src = q_th + (kw - KW // 2)
                if VISIBLE:
                    src = tl.load(map_ptr + src, mask=ok, other=-1)
                    ok = ok & (src >= 0)
                xv = tl.load(x_cols + src.to(tl.int64)[:, None] * C, mask=ok[:, None] & col_ok2, other=0.0)
                wv = tl.load(w_tap, mask=col_ok, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
                w_tap += C
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * C + cols[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok2)


@triton.jit
def _dwconv_wgrad_kernel(
    x_ptr, dy_ptr, part_ptr, pos_ptr, map_ptr,
    n_rows, rows_per_chunk, C, T, H, W,
    KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, VISIBLE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Each program owns partial[chunk, :, channel block]: no other program writes it, so the
    # read-add-write per row block needs no atomics and the sum order is fixed.
    chunk = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    col_ok2 = col_ok[None, :]
    x_cols = x_ptr + cols[None, :]
    part_cols = part_ptr + chunk * (KT * KH * KW) * C + cols
    start = chunk * rows_per_chunk
    end = tl.minimum(start + rows_per_chunk, n_rows)
    for r0 in range(start, end, BLOCK_P):
        rows = r0 + tl.arange(0, BLOCK_P)
        row_ok = rows < end
        if VISIBLE:
            p = tl.load(pos_ptr + rows, mask=row_ok, other=0)
        else:
            p = rows
        t, h, w = _grid_coords(p, T, H, W)
        dy = tl.load(dy_ptr + rows.to(tl.int64)[:, None] * C + cols[None, :],
                     mask=row_ok[:, None] & col_ok2, other=0.0).to(tl.float32)
        part_tap = part_cols
        for kt in range(KT):
            tt = t + (kt - KT // 2)
            ok_t = row_ok & (tt >= 0) & (tt < T)
            q_t = p + (kt - KT // 2) * H * W
            for kh in range(KH):
                hh = h + (kh - KH // 2)
                ok_th = ok_t & (hh >= 0) & (hh < H)
                q_th = q_t + (kh - KH // 2) * W
                for kw in range(KW):
                    ww = w + (kw - KW // 2)
                    ok = ok_th & (ww >= 0) & (ww < W)
                    src = q_th + (kw - KW // 2)
                    if VISIBLE:
                        src = tl.load(map_ptr + src, mask=ok, other=-1)
                        ok = ok & (src >= 0)
                    xv = tl.load(x_cols + src.to(tl.int64)[:, None] * C, mask=ok[:, None] & col_ok2, other=0.0)
                    s = tl.sum(xv.to(tl.float32) * dy, axis=0)
                    tl.store(part_tap, tl.load(part_tap, mask=col_ok, other=0.0) + s, mask=col_ok)
                    part_tap += C


# GPU tiles (rows, channels, warps): 8-16 accumulator elements per thread keep these kernels free of
# register spills on sm_90 (checked for 3x5x5 with ptxas). The forward (also the input gradient)
# picks among its configurations by measurement, once per channel count and kernel shape.
_FWD_CONFIGS = [triton.Config({"BLOCK_P": p, "BLOCK_C": c}, num_warps=w)
                for p, c, w in ((64, 32, 8), (32, 32, 4), (64, 64, 8), (128, 32, 8))]
_WGRAD_TILE = (64, 32, 8)
# (not under the interpreter: autotuning there would time Python, and it breaks the interpreted kernel)
_dwconv_fwd_tuned = (None if triton.knobs.runtime.interpret
                     else triton.autotune(_FWD_CONFIGS, key=["C", "KT", "KH", "KW", "VISIBLE"])(_dwconv_fwd_kernel))


def _interpreter_tile(n_rows: int, channels: int):
    """Under Triton's CPU interpreter every program costs Python time: one tile covers as much as
    possible. Returns (rows, channels) per program."""
    return min(1024, triton.next_power_of_2(max(n_rows, 1))), min(64, triton.next_power_of_2(channels))


def _check_device(x: torch.Tensor):
    if x.device.type != "cuda" and not triton.knobs.runtime.interpret:
        raise RuntimeError(
            f"the Triton depthwise-conv kernel got a {x.device.type} tensor; it runs on CUDA, or "
            "on the CPU only under Triton's interpreter (TRITON_INTERPRET=1 in the environment "
            "before triton is first imported)")


@torch.library.custom_op("video_mcmae::dwconv_rows", mutates_args=())
def dwconv_rows(x: torch.Tensor, w_kc: torch.Tensor, bias: Optional[torch.Tensor],
                positions: Optional[torch.Tensor], index_map: Optional[torch.Tensor],
                grid: List[int], ksize: List[int]) -> torch.Tensor:
    """y = depthwise conv of the row matrix x (N, C) on `grid` = (T, H, W).

    w_kc: taps x channels (kT*kH*kW, C); positions/index_map: both None (dense: N = B*T*H*W)
    or int32 tensors for the visible-only variant."""
    _check_device(x)
    n_rows, channels = x.shape
    y = torch.empty_like(x)
    if n_rows == 0:
        return y
    visible = positions is not None
    args = (x, w_kc, bias if bias is not None else w_kc, y, positions if visible else x,
            index_map if visible else x, n_rows, channels, *grid, *ksize)
    if x.is_cuda:
        def launch(meta):
            return triton.cdiv(n_rows, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"])
        _dwconv_fwd_tuned[launch](*args, HAS_BIAS=bias is not None, VISIBLE=visible)
    else:
        block_p, block_c = _interpreter_tile(n_rows, channels)
        _dwconv_fwd_kernel[(triton.cdiv(n_rows, block_p), triton.cdiv(channels, block_c))](
            *args, HAS_BIAS=bias is not None, VISIBLE=visible, BLOCK_P=block_p, BLOCK_C=block_c)
    return y


@dwconv_rows.register_fake
def _(x, w_kc, bias, positions, index_map, grid, ksize):
    return torch.empty_like(x)


@torch.library.custom_op("video_mcmae::dwconv_rows_wgrad", mutates_args=())
def dwconv_rows_wgrad(dy: torch.Tensor, x: torch.Tensor, positions: Optional[torch.Tensor],
                      index_map: Optional[torch.Tensor], grid: List[int],
                      ksize: List[int]) -> torch.Tensor:
    """Weight gradient (kT*kH*kW, C) in fp32: sum over output rows of dy x shifted input."""
    _check_device(x)
    n_rows, channels = x.shape
    taps = ksize[0] * ksize[1] * ksize[2]
    if n_rows == 0:
        return x.new_zeros((taps, channels), dtype=torch.float32)
    block_p, block_c, warps = _WGRAD_TILE if x.is_cuda else (*_interpreter_tile(n_rows, channels), 4)
    chunks = min(triton.cdiv(n_rows, block_p), _MAX_WGRAD_CHUNKS)
    rows_per_chunk = triton.cdiv(triton.cdiv(n_rows, chunks), block_p) * block_p
    chunks = triton.cdiv(n_rows, rows_per_chunk)
    partial = x.new_zeros((chunks, taps, channels), dtype=torch.float32)
    visible = positions is not None
    _dwconv_wgrad_kernel[(chunks, triton.cdiv(channels, block_c))](
        x, dy, partial, positions if visible else x, index_map if visible else x,
        n_rows, rows_per_chunk, channels, *grid, *ksize,
        VISIBLE=visible, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps,
    )
    return partial.sum(0)


@dwconv_rows_wgrad.register_fake
def _(dy, x, positions, index_map, grid, ksize):
    return x.new_empty((ksize[0] * ksize[1] * ksize[2], x.shape[1]), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, w_kc, bias, positions, index_map, grid, ksize = inputs
    ctx.save_for_backward(x, w_kc, positions, index_map)
    ctx.grid, ctx.ksize = grid, ksize
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, dy):
    x, w_kc, positions, index_map = ctx.saved_tensors
    dy = dy.contiguous()
    dx = dw = db = None
    if ctx.needs_input_grad[0]:
        # reversing the flattened tap axis flips the kernel along every dimension
        dx = dwconv_rows(dy, w_kc.flip(0), None, positions, index_map, ctx.grid, ctx.ksize)
    if ctx.needs_input_grad[1]:
        dw = dwconv_rows_wgrad(dy, x, positions, index_map, ctx.grid, ctx.ksize).to(w_kc.dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
        db = dy.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
    return dx, dw, db, None, None, None, None


dwconv_rows.register_autograd(_backward, setup_context=_setup_context)
