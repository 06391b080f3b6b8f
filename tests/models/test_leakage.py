"""No masked pixel may influence a visible token of the encoder (2D and 3D, with and without MSD)."""
import pytest
import timm
import torch

import video_mcmae.models  # noqa: F401  (registers the presets)
from video_mcmae.models.masking import upsample_mask

CASES = [
    ("videoconvmae_tiny_patch16", dict(num_frames=4, img_size=32, mask_type="tube")),
    ("videoconvmae_tiny_patch16", dict(num_frames=4, img_size=32, mask_type="random")),
    ("videoconvmae_tiny_msd_patch16", dict(num_frames=4, img_size=32, mask_type="tube")),
    ("videoconvmae_tiny_msd_patch16", dict(num_frames=4, img_size=48, mask_type="random", mask_ratio=0.5)),
    ("convmae_convvit_tiny_patch16", dict(img_size=64)),
    ("convmae_convvit_tiny_patch16", dict(img_size=48, msd=False)),
]


def _masked_pixels(model, mask):
    """Pixel-level mask (B, 1, *input_size): True where the pixel belongs to a masked token."""
    return upsample_mask(mask, model.grid_size, model.patch_size_nd).unsqueeze(1)


def _visible_outputs(model, x, mask):
    latent = model.forward_encoder(x, mask)
    return latent, model.forward_decoder(latent, mask)


def assert_no_leakage(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *model.input_size, generator=gen)
    mask = model.draw_mask(x, gen)
    noisy = torch.where(_masked_pixels(model, mask), 100 * torch.randn(x.shape, generator=gen), x)
    with torch.no_grad():
        latent, pred = _visible_outputs(model, x, mask)
        latent_noisy, pred_noisy = _visible_outputs(model, noisy, mask)
    torch.testing.assert_close(latent_noisy, latent, atol=1e-6, rtol=0)
    torch.testing.assert_close(pred_noisy, pred, atol=1e-6, rtol=0)


@pytest.mark.parametrize("visible_only", [False, True], ids=["dense", "visible-only"])
@pytest.mark.parametrize("name,kwargs", CASES)
def test_masked_pixels_do_not_reach_visible_tokens(name, kwargs, visible_only):
    torch.manual_seed(0)
    model = timm.create_model(name, visible_only=visible_only, **kwargs).eval()
    assert_no_leakage(model)


def _skip_mask(block):
    """A leaky block: runs the conv branch without zeroing masked positions."""
    forward = block.forward
    return lambda x, keep=None: forward(x, None)


@pytest.mark.parametrize("name,kwargs,stage", [
    (CASES[0][0], CASES[0][1], "blocks1"),
    (CASES[2][0], CASES[2][1], "blocks2"),
    (CASES[4][0], CASES[4][1], "blocks1"),
])
def test_leakage_check_fails_on_a_leaky_block(name, kwargs, stage, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model(name, visible_only=False, **kwargs).eval()  # the dense path runs block.forward
    block = getattr(model, stage)[0]
    monkeypatch.setattr(block, "forward", _skip_mask(block))
    with pytest.raises(AssertionError):
        assert_no_leakage(model)
