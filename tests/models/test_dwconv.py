"""Depthwise-conv dispatch and the PyTorch reference paths (no Triton needed)."""
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

from video_mcmae.models import dwconv


def _masked_dense_reference(rows, index_map, w, b):
    """Scatter rows into a zero grid, conv with torch, read the rows back (independent of dwconv)."""
    flat = index_map.reshape(-1)
    where = torch.nonzero(flat >= 0).squeeze(1)
    order = flat[where].long()
    grid = rows.new_zeros(flat.numel(), rows.shape[1])
    grid[where] = rows[order]
    conv = F.conv3d if index_map.dim() == 4 else F.conv2d
    x = grid.view(*index_map.shape, -1).movedim(-1, 1)
    y = conv(x, w, b, padding=tuple(k // 2 for k in w.shape[2:]), groups=rows.shape[1])
    y = y.movedim(1, -1).reshape(-1, rows.shape[1])
    out = torch.empty_like(rows)
    out[order] = y[where]
    return out


@pytest.mark.parametrize("shape,kernel", [((2, 3, 5, 7, 6), (3, 5, 5)), ((2, 7, 5, 6), (5, 5))])
def test_dense_torch_backend_is_channels_last_conv(shape, kernel):
    x = torch.randn(shape)
    w = torch.randn(shape[-1], 1, *kernel)
    b = torch.randn(shape[-1])
    y = dwconv.depthwise_conv(x, w, b, backend="torch")
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    ref = conv(x.movedim(-1, 1), w, b, padding=tuple(k // 2 for k in kernel), groups=shape[-1])
    torch.testing.assert_close(y, ref.movedim(1, -1))


@pytest.mark.parametrize("shape,kernel", [((2, 3, 4, 5, 3), (3, 5, 5)), ((2, 2, 4, 4, 3), (1, 3, 3)),
                                          ((2, 5, 4, 3), (5, 5))])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_gradients_are_the_convolutions(shape, kernel, bias):
    """The CPU path computes the input gradient as a convolution with the flipped kernel: exact in
    float64 (gradcheck), and torch's own gradients to rounding in float32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[-1], 1, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[-1], generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(lambda *a: dwconv.depthwise_conv(*a, backend="torch"), (x, w, b), fast_mode=True)

    inputs = [t.detach().float().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())]
    y = dwconv.depthwise_conv(*inputs, *([] if bias else [None]), backend="torch")
    dy = torch.randn(y.shape, generator=g)
    conv = F.conv3d if len(kernel) == 3 else F.conv2d
    ref = conv(inputs[0].movedim(-1, 1), *inputs[1:], *([] if bias else [None]),
               padding=tuple(k // 2 for k in kernel), groups=shape[-1]).movedim(1, -1)
    for got, want in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        torch.testing.assert_close(got, want)


def test_cpu_gradient_of_one_input_only():
    """A frozen weight (probing through the conv) or a frozen input (the first layer) gets no
    gradient computed for it, and the other one is still right."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 3, 6, 6, 4, generator=g), torch.randn(4, 1, 3, 5, 5, generator=g)
    for frozen in ("input", "weight"):
        xi, wi = x.clone().requires_grad_(frozen != "input"), w.clone().requires_grad_(frozen != "weight")
        y = dwconv.depthwise_conv(xi, wi, None, backend="torch")
        (grad,) = torch.autograd.grad(y.square().sum(), wi if frozen == "input" else xi)
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        yr = F.conv3d(xr.movedim(-1, 1), wr, None, padding=(1, 2, 2), groups=4).movedim(1, -1)
        want = torch.autograd.grad(yr.square().sum(), wr if frozen == "input" else xr)[0]
        torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("grid,kernel", [((2, 3, 5, 7), (3, 5, 5)), ((2, 7, 5), (5, 5))])
def test_visible_torch_reference(grid, kernel):
    g = torch.Generator().manual_seed(0)
    masked = torch.rand(grid, generator=g) < 0.5
    n = int((~masked).sum())
    index_map = torch.full(grid, -1, dtype=torch.int32)
    index_map[~masked] = torch.randperm(n, generator=g).to(torch.int32)
    rows = torch.randn(n, 6, generator=g)
    w = torch.randn(6, 1, *kernel, generator=g)
    b = torch.randn(6, generator=g)
    y = dwconv.depthwise_conv_visible(rows, index_map, w, b, backend="torch")
    torch.testing.assert_close(y, _masked_dense_reference(rows, index_map, w, b))


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16", "autocast"])
def test_bf16_3d_weight_gradient_on_the_cpu_is_the_fp32_one_rounded(autocast):
    """torch's CPU bf16 depthwise Conv3d weight gradient of a channels-last input read uninitialised
    memory: after freed memory was filled with huge values it returned them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 8, 8, 32, generator=g)
    w, b = torch.randn(32, 1, 3, 5, 5, generator=g) / 8, torch.randn(32, generator=g)
    dy = torch.randn(2, 2, 8, 8, 32, generator=g)

    def weight_grad(dtype, enabled):
        weight = w.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            y = dwconv.depthwise_conv(x.to(dtype), weight.to(dtype), b.to(dtype), backend="torch")
        return torch.autograd.grad(y.float(), weight, dy)[0]

    expected = weight_grad(torch.float32, False)
    for _ in range(3):
        garbage = [torch.full((n * 4099,), 3e33) for n in range(1, 200)]
        del garbage
        got = weight_grad(torch.float32, True) if autocast else weight_grad(torch.bfloat16, False)
        torch.testing.assert_close(got, expected, rtol=0, atol=0.01 * expected.abs().max().item())


def test_visible_positions_inverts_index_map():
    index_map = torch.tensor([[[2, -1], [0, -1]], [[-1, 1], [3, -1]]], dtype=torch.int32)
    pos = dwconv.visible_positions(index_map)
    assert pos.tolist() == [2, 5, 0, 6]
    assert torch.equal(index_map.reshape(-1)[pos.long()], torch.arange(4, dtype=torch.int32))


def test_auto_backend_uses_torch_on_cpu(monkeypatch):
    monkeypatch.setattr(dwconv, "load_kernels", lambda: pytest.fail("Triton used for a CPU tensor"))
    x = torch.randn(1, 4, 4, 3)
    dwconv.depthwise_conv(x, torch.randn(3, 1, 3, 3))


@pytest.mark.parametrize("weight_shape,match", [
    ((3, 1, 4, 4), "odd kernel sizes"),
    ((3, 1, 3), "kernel dims"),
    ((5, 1, 3, 3), "C=3"),
    ((3, 2, 3, 3), r"\(C, 1, \*k\)"),
])
def test_bad_weights_are_named(weight_shape, match):
    with pytest.raises(ValueError, match=match):
        dwconv.depthwise_conv(torch.randn(1, 4, 4, 3), torch.randn(weight_shape))


def test_bad_grid_and_bias_are_named():
    with pytest.raises(ValueError, match="2D or 3D grid"):
        dwconv.depthwise_conv(torch.randn(1, 4, 3), torch.randn(3, 1, 3))
    with pytest.raises(ValueError, match="bias must be"):
        dwconv.depthwise_conv(torch.randn(1, 4, 4, 3), torch.randn(3, 1, 3, 3), torch.randn(4))
    with pytest.raises(ValueError, match="int32"):
        dwconv.depthwise_conv_visible(torch.randn(2, 3), torch.zeros(1, 2, 2, dtype=torch.long),
                                      torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match="marks 4 visible positions but there are 2 rows"):
        dwconv.depthwise_conv_visible(torch.randn(2, 3), torch.arange(4, dtype=torch.int32).view(1, 2, 2),
                                      torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        dwconv.depthwise_conv_visible(torch.randn(2, 4), torch.zeros(1, 2, 2, dtype=torch.int32),
                                      torch.randn(3, 1, 3, 3))


def test_backend_choice(monkeypatch):
    """Decided when a block is built: the environment variable overrides 'auto' only."""
    x, w = torch.randn(1, 4, 4, 3), torch.randn(3, 1, 3, 3)
    monkeypatch.setenv(dwconv.BACKEND_ENV, "cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        dwconv.resolve_backend("auto", (3, 3))
    assert dwconv.resolve_backend("torch", (3, 3)) == "torch"
    monkeypatch.setenv(dwconv.BACKEND_ENV, "torch")
    assert dwconv.resolve_backend("auto", (3, 3)) == "torch"
    dwconv.depthwise_conv(x, w, backend=dwconv.resolve_backend("auto", (3, 3)))
    monkeypatch.delenv(dwconv.BACKEND_ENV)
    monkeypatch.setattr(dwconv, "_triton_usable", True)
    with pytest.raises(ValueError, match="up to 7"):
        dwconv.resolve_backend("triton", (9, 9))
    with pytest.raises(ValueError, match="up to 7"):
        dwconv.depthwise_conv(torch.randn(1, 9, 9, 3), torch.randn(3, 1, 9, 9), backend="triton")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dwconv.resolve_backend("auto", (3, 3)) == "auto"  # Triton for the CUDA tensors
    assert dwconv.resolve_backend("auto", (9, 9)) == "torch"
    monkeypatch.setattr(dwconv, "_triton_usable", False)
    assert dwconv.resolve_backend("auto", (3, 3)) == "torch"
    with pytest.raises(RuntimeError, match="triton is not installed"):
        dwconv.resolve_backend("triton", (3, 3))
    with pytest.raises(ValueError, match=r"got 'cudnn' \(argument backend=\)"):
        dwconv.depthwise_conv(x, w, backend="cudnn")


def test_importing_loads_no_kernel_and_reads_no_environment():
    code = ("import os, sys; os.environ['VIDEO_MCMAE_DWCONV'] = 'nonsense'; import video_mcmae; "
            "from video_mcmae.models import dwconv; "
            "assert dwconv._kernels is None and dwconv._triton_usable is None; "
            "assert 'video_mcmae.models.kernels.dwconv' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_model_argument_chooses_the_backend(monkeypatch):
    """`dwconv_backend` reaches every conv block; only 'auto' defers to the environment variable,
    read when the model is built."""
    monkeypatch.setenv(dwconv.BACKEND_ENV, "cudnn")  # an invalid override, so reading it shows
    x = torch.randn(1, 3, 2, 32, 32)
    forced = timm.create_model("videoconvvit_tiny_patch16", num_frames=2, img_size=32, dwconv_backend="torch")
    assert {blk.attn.backend for blk in (*forced.blocks1, *forced.blocks2)} == {"torch"}
    forced(x)
    with pytest.raises(ValueError, match=f"environment variable {dwconv.BACKEND_ENV}"):
        timm.create_model("videoconvvit_tiny_patch16", num_frames=2, img_size=32)
    monkeypatch.setenv(dwconv.BACKEND_ENV, "torch")
    auto = timm.create_model("videoconvvit_tiny_patch16", num_frames=2, img_size=32)
    monkeypatch.setenv(dwconv.BACKEND_ENV, "cudnn")  # changed after the build: not read again
    auto(x)
    with pytest.raises(ValueError, match=r"got 'cuda' \(dwconv_backend\)"):
        timm.create_model("videoconvvit_tiny_patch16", dwconv_backend="cuda")
