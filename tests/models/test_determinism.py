"""Every gradient of every preset is the same bits on every call on the CPU, in bf16 and fp32, at 1,
2 and 4 threads (set here, not inherited: torch takes 1 or 2 threads on 2 CPUs; 4 oversubscribes a
2-core machine), with freed memory filled with huge values between calls. This is what makes a
resumed run repeat the uninterrupted one (tests/engine/test_checkpoint.py).

It failed for bf16 before `models.dwconv` gave torch's CPU bf16 depthwise Conv3d a channels-first
input: its weight gradient of a channels-last input read uninitialised memory on these small grids."""
import pytest
import timm
import torch

from tests.conftest import compute_conditions

PRESETS = [("videoconvmae_tiny_patch16", {}), ("videoconvmae_tiny_patch16", {"visible_only": False}),
           ("videoconvmae_tiny_msd_patch16", {}), ("videoconvmae_tiny_patch16", {"decoder_mask_ratio": 0.5}),
           ("videoconvvit_tiny_patch16", {"num_classes": 4}),
           ("convmae_convvit_tiny_patch16", {}), ("convvit_tiny_patch16", {"num_classes": 4})]


def _gradients(model, x, calls=3):
    out = []
    for _ in range(calls):
        garbage = [torch.full((n * 4099,), 3e33) for n in range(1, 100)]
        del garbage
        model.zero_grad(set_to_none=True)
        if hasattr(model, "decoder_blocks"):
            loss = model(x, generator=torch.Generator().manual_seed(0))[0]
        else:
            loss = model(x).float().square().mean()
        loss.float().backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return out


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("name,kwargs", PRESETS, ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_every_gradient_repeats_bit_for_bit(name, kwargs, dtype, threads):
    video = name.startswith("video")
    torch.manual_seed(0)
    size = dict(num_frames=4, img_size=32) if video else dict(img_size=32)
    model = timm.create_model(name, **size, **kwargs).to(dtype)
    x = torch.randn(2, 3, 4, 32, 32) if video else torch.randn(2, 3, 32, 32)
    with compute_conditions(threads, deterministic=False):
        first, *again = _gradients(model, x.to(dtype))
    assert len(first) == sum(1 for p in model.parameters() if p.requires_grad)
    for grads in again:
        for n, g in grads.items():
            assert torch.equal(g, first[n]), n
