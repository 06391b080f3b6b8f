"""The Triton depthwise-conv kernels against torch's conv2d/conv3d: values and every gradient.

With CUDA the kernels run compiled on the GPU. Without it they must run under Triton's CPU
interpreter, which Triton chooses when `triton.language` is first imported (timm imports it), so
`test_kernel_interpreter.py` runs this module in a fresh process with TRITON_INTERPRET=1 set from the
start; in any other CPU-only process it is skipped. The interpreter costs Python time per
operation, hence the tiny grids.
"""
import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: the depthwise-conv kernels cannot run")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not (INTERPRETED or torch.cuda.is_available()):
    pytest.skip("no CUDA: runs under Triton's interpreter through test_kernel_interpreter.py",
                allow_module_level=True)

import torch.nn.functional as F  # noqa: E402

from video_mcmae.models import dwconv  # noqa: E402

DEVICE = "cpu" if INTERPRETED else "cuda"
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


@pytest.fixture(autouse=True)
def _exact_cudnn(monkeypatch):
    """cuDNN's fp32 convs may use TF32 on a GPU, which would make the reference the inexact side."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _conv_reference(x, w, b):
    """Channels-last (B, *S, C) 'same' depthwise conv with torch's own conv in fp32."""
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    pad = tuple(k // 2 for k in w.shape[2:])
    return conv(x.float().movedim(-1, 1), w.float(), None if b is None else b.float(),
                padding=pad, groups=x.shape[-1]).movedim(1, -1)


def _close(actual, expected, dtype, what):
    err = (actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-6)
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


def _params(shape, kernel, dtype, with_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[-1]
    x = torch.randn(shape, generator=g).to(DEVICE, dtype)
    w = torch.randn(c, 1, *kernel, generator=g).to(DEVICE)
    b = torch.randn(c, generator=g).to(DEVICE) if with_bias else None
    return x, w, b


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, [t for t in inputs if t is not None], grad)


def _random_index_map(grid, ratio, seed):
    """int32 index map over `grid` with ~ratio masked and the visible rows in a shuffled order."""
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(grid, generator=g) < ratio
    index_map = torch.full(grid, -1, dtype=torch.int32)
    n = int((~masked).sum())
    index_map[~masked] = torch.randperm(n, generator=g).to(torch.int32)
    return index_map.to(DEVICE), n


CASES = [  # (grid B,*S,C, kernel)
    ((2, 3, 5, 7, 8), (1, 1, 1)),
    ((2, 3, 5, 7, 8), (3, 5, 5)),
    ((1, 3, 5, 5, 4), (7, 7, 7)),
    ((2, 7, 9, 8), (5, 5)),
    ((1, 9, 7, 4), (7, 7)),
]


@pytest.mark.parametrize("shape,kernel", CASES, ids=lambda v: "x".join(map(str, v)))
def test_dense_matches_torch(shape, kernel):
    x, w, b = _params(shape, kernel, torch.float32)
    x.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    y = dwconv.depthwise_conv(x, w, b, backend="triton")
    ref = _conv_reference(x, w, b)
    _close(y, ref, torch.float32, "output")
    grad = torch.randn_like(ref)
    for name, got, exp in zip("xwb", _grads(y, (x, w, b), grad), _grads(ref, (x, w, b), grad)):
        _close(got, exp, torch.float32, f"grad {name}")


@pytest.mark.parametrize("shape,kernel", CASES, ids=lambda v: "x".join(map(str, v)))
def test_visible_matches_masked_dense(shape, kernel):
    index_map, n = _random_index_map(shape[:-1], 0.6, seed=1)
    rows, w, b = _params((n, shape[-1]), kernel, torch.float32)
    for t in (rows, w, b):
        t.requires_grad_(True)
    y = dwconv.depthwise_conv_visible(rows, index_map, w, b, backend="triton")

    # reference: the masked grid (zeros where masked) through torch's conv, read at the rows
    flat = index_map.reshape(-1)
    where = torch.nonzero(flat >= 0).squeeze(1)
    canvas = rows.new_zeros(flat.numel(), shape[-1]).index_copy(0, where, rows[flat[where].long()])
    dense = _conv_reference(canvas.view(shape), w, b).reshape(-1, shape[-1])
    ref = rows.new_zeros(n, shape[-1]).index_copy(0, flat[where].long(), dense[where])
    _close(y, ref, torch.float32, "output")
    grad = torch.randn_like(ref)
    for name, got, exp in zip("xwb", _grads(y, (rows, w, b), grad), _grads(ref, (rows, w, b), grad)):
        _close(got, exp, torch.float32, f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("visible", [False, True], ids=["dense", "visible"])
def test_half_precision_accumulates_in_fp32(dtype, visible):
    shape, kernel = (1, 3, 5, 5, 8), (3, 3, 3)
    x, w, b = _params(shape, kernel, dtype)
    x.requires_grad_(True)
    w.requires_grad_(True)
    if visible:
        index_map, _ = _random_index_map(shape[:-1], 0.0, seed=2)
        rows = x.detach().reshape(-1, shape[-1])[dwconv.visible_positions(index_map).long()]
        rows.requires_grad_(True)
        y = dwconv.depthwise_conv_visible(rows, index_map, w, b, backend="triton")
        inv = index_map.reshape(-1).long()
        y_grid = y[inv].view(shape)
    else:
        y = y_grid = dwconv.depthwise_conv(x, w, b, backend="triton")
    assert y.dtype == dtype
    ref = _conv_reference(x, w, b)
    _close(y_grid, ref, dtype, "output")
    grad = torch.randn(ref.shape, device=DEVICE).to(dtype)
    (gw_ref,) = torch.autograd.grad(ref, (w,), grad.float())
    (gw,) = torch.autograd.grad(y_grid, (w,), grad)
    _close(gw, gw_ref, dtype, "grad w")


def test_many_tiles_and_chunks(monkeypatch):
    """Small tiles force several programs per axis and several row blocks per weight-grad chunk."""
    dw = dwconv.load_kernels()
    monkeypatch.setattr(dw, "_interpreter_tile", lambda n, c: (16, 4))
    monkeypatch.setattr(dw, "_MAX_WGRAD_CHUNKS", 3)
    shape, kernel = (1, 3, 5, 7, 8), (1, 3, 3)
    for visible in (False, True):
        index_map, n = _random_index_map(shape[:-1], 0.5 if visible else 0.0, seed=3)
        rows, w, b = _params((n, shape[-1]), kernel, torch.float32)
        for t in (rows, w, b):
            t.requires_grad_(True)
        got = dwconv.depthwise_conv_visible(rows, index_map, w, b, backend="triton")
        exp = dwconv.depthwise_conv_visible(rows, index_map, w, b, backend="torch")
        _close(got, exp, torch.float32, "output")
        grad = torch.randn_like(exp)
        for name, g1, g2 in zip("xwb", _grads(got, (rows, w, b), grad), _grads(exp, (rows, w, b), grad)):
            _close(g1, g2, torch.float32, f"grad {name}")


def test_weight_grad_is_deterministic():
    x, w, _ = _params((2, 5, 9, 8), (5, 5), torch.float32, with_bias=False)
    w.requires_grad_(True)
    grad = torch.randn_like(x)
    first, second = (torch.autograd.grad(dwconv.depthwise_conv(x, w, backend="triton"), w, grad)[0]
                     for _ in range(2))
    assert torch.equal(first, second)


def test_empty_visible_set():
    w = torch.randn(4, 1, 3, 3, device=DEVICE, requires_grad=True)
    index_map = torch.full((1, 3, 3), -1, dtype=torch.int32, device=DEVICE)
    rows = torch.zeros(0, 4, device=DEVICE, requires_grad=True)
    y = dwconv.depthwise_conv_visible(rows, index_map, w, backend="triton")
    assert y.shape == (0, 4)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_compiles_as_opaque_op():
    """torch.compile traces through the custom op (fake kernel + autograd) without graph breaks."""
    x, w, b = _params((1, 3, 5, 5, 4), (3, 3, 3), torch.float32)
    w.requires_grad_(True)

    def f(x, w, b):
        return dwconv.depthwise_conv(x, w, b, backend="triton").square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(x, w, b)
    (gw,) = torch.autograd.grad(loss, w)
    ref = f(x, w, b)
    (gw_ref,) = torch.autograd.grad(ref, w)
    _close(loss, ref, torch.float32, "loss")
    _close(gw, gw_ref, torch.float32, "grad w")


def test_pretraining_model_with_kernel_matches_torch_backend():
    """The visible-only model path through the Triton kernel equals it through the torch reference."""
    import timm

    results = []
    for backend in ("triton", "torch"):
        torch.manual_seed(0)  # the same weights in both models
        model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, mask_ratio=0.5,
                                  dwconv_backend=backend).to(DEVICE)
        x = torch.randn(2, 3, *model.input_size, generator=torch.Generator().manual_seed(2)).to(DEVICE)
        mask = model.draw_mask(x, torch.Generator(device=DEVICE).manual_seed(1))
        loss = model(x, mask)[0]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_k, grads_k), (loss_t, grads_t) = results
    _close(loss_k, loss_t, torch.float32, "loss")
    for name in ("blocks1.0.attn.weight", "blocks2.0.attn.bias", "patch_embed1.proj.weight"):
        _close(grads_k[name], grads_t[name], torch.float32, f"grad {name}")
