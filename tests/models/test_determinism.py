"""`run.deterministic`: every gradient of every preset is the same bits on every call, with several
threads (the conditions are set here, not inherited: torch takes 1 or 2 threads on 2 CPUs).

Without it, on a 2-core machine, oneDNN's bf16 depthwise Conv3d weight gradient of these small
grids differs from call to call with 2 threads (`models.dwconv` computes it with one thread in
deterministic mode)."""
import pytest
import timm
import torch

from video_mcmae.models import dwconv
from tests.conftest import compute_conditions

PRESETS = [("videoconvmae_tiny_patch16", {}), ("videoconvmae_tiny_patch16", {"visible_only": False}),
           ("videoconvmae_tiny_msd_patch16", {}), ("videoconvmae_tiny_patch16", {"decoder_mask_ratio": 0.5}),
           ("videoconvvit_tiny_patch16", {"num_classes": 4}),
           ("convmae_convvit_tiny_patch16", {}), ("convvit_tiny_patch16", {"num_classes": 4})]


def _gradients(model, x, calls=3):
    out = []
    for _ in range(calls):
        model.zero_grad(set_to_none=True)
        if hasattr(model, "decoder_blocks"):
            loss = model(x, generator=torch.Generator().manual_seed(0))[0]
        else:
            loss = model(x).float().square().mean()
        loss.float().backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return out


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("name,kwargs", PRESETS, ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_every_gradient_repeats_bit_for_bit(name, kwargs, dtype, threads):
    video = name.startswith("video")
    torch.manual_seed(0)
    size = dict(num_frames=4, img_size=32) if video else dict(img_size=32)
    model = timm.create_model(name, **size, **kwargs).to(dtype)
    x = torch.randn(2, 3, 4, 32, 32) if video else torch.randn(2, 3, 32, 32)
    with compute_conditions(threads, deterministic=True):
        first, *again = _gradients(model, x.to(dtype))
    assert len(first) == sum(1 for p in model.parameters() if p.requires_grad)
    for grads in again:
        for n, g in grads.items():
            assert torch.equal(g, first[n]), n


@pytest.mark.parametrize("shape,kernel", [((2, 2, 4, 4, 48), (3, 5, 5)), ((2, 6, 5, 16), (5, 5))])
def test_deterministic_conv_equals_the_default_and_its_weight_gradient_ignores_threads(shape, kernel):
    """The deterministic path is the same convolution: the output and input gradient bit for bit,
    the weight and bias gradients to rounding; and those are the same bits at 1 and 4 threads."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, requires_grad=True)
    w = torch.randn(shape[-1], 1, *kernel, generator=g, requires_grad=True)
    b = torch.randn(shape[-1], generator=g, requires_grad=True)
    dy = torch.randn(shape, generator=g)

    def run(threads, deterministic):
        with compute_conditions(threads, deterministic):
            y = dwconv.depthwise_conv(x, w, b, backend="torch")
            return (y, *torch.autograd.grad(y, (x, w, b), dy))

    y, dx, dw, db = run(2, False)
    y1, dx1, dw1, db1 = run(1, True)
    y4, dx4, dw4, db4 = run(4, True)
    assert torch.equal(y4, y) and torch.equal(dx4, dx)
    torch.testing.assert_close(dw4, dw)
    torch.testing.assert_close(db4, db)
    assert torch.equal(dw4, dw1) and torch.equal(db4, db1)
