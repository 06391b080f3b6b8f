import pytest
import timm
import torch

from video_mcmae.config import DataConfig, ModelConfig
from video_mcmae.models import build_model

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])


def _video_model(**kwargs):
    return timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, **kwargs)


def test_loss_touches_masked_cubes_only():
    model = _video_model(mask_ratio=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    pred = torch.randn(2, mask.shape[1], model.patch_dim, requires_grad=True)
    model.forward_loss(x, pred, mask).backward()
    assert (pred.grad[~mask] == 0).all()
    assert (pred.grad[mask].abs().sum(-1) > 0).all()


def test_loss_is_the_mean_squared_error_over_masked_cubes():
    model = _video_model(mask_ratio=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    pred = torch.randn(2, mask.shape[1], model.patch_dim)
    expected = ((pred - model.target(x))[mask] ** 2).mean()
    torch.testing.assert_close(model.forward_loss(x, pred, mask), expected)


def test_video_target_is_per_cube_per_channel_normalised():
    model = _video_model()
    x = torch.randn(1, 3, 4, 32, 32)
    target = model.target(x)
    assert target.shape == (1, 2 * 2 * 2, 2 * 16 * 16 * 3)
    pixels = x[0] * STD.view(3, 1, 1, 1) + MEAN.view(3, 1, 1, 1)
    for token, (t, h, w) in enumerate([(t, h, w) for t in range(2) for h in range(2) for w in range(2)]):
        cube = pixels[:, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16]  # (3, 2, 16, 16)
        values = target[0, token].view(2, 16, 16, 3)  # (pt, ph, pw, c) order
        for c in range(3):
            expected = (cube[c] - cube[c].mean()) / (cube[c].std(unbiased=True) + 1e-6)
            torch.testing.assert_close(values[..., c], expected, atol=1e-5, rtol=1e-5)


def test_video_raw_target_is_the_denormalised_clip():
    model = _video_model(norm_pix_loss=False)
    x = torch.randn(1, 3, 4, 32, 32)
    pixels = x * STD.view(1, 3, 1, 1, 1) + MEAN.view(1, 3, 1, 1, 1)
    torch.testing.assert_close(model.unpatchify(model.target(x)), pixels)


def test_image_target_normalises_each_patch_over_all_values():
    model = timm.create_model("convmae_convvit_tiny_patch16", img_size=32)
    x = torch.randn(1, 3, 32, 32)
    patch = x[0, :, 16:32, 0:16].permute(1, 2, 0).reshape(-1)  # token (1, 0), (p, q, c) order
    expected = (patch - patch.mean()) / (patch.var() + 1e-6) ** 0.5
    torch.testing.assert_close(model.target(x)[0, 2], expected)


def test_patchify_roundtrip_for_several_sizes():
    for kwargs in (dict(num_frames=4, img_size=32), dict(num_frames=6, img_size=(32, 48))):
        model = timm.create_model("videoconvmae_tiny_patch16", **kwargs)
        x = torch.randn(2, 3, *model.input_size)
        patches = model.patchify(x)
        assert patches.shape == (2, x.shape[2] // 2 * x.shape[3] // 16 * x.shape[4] // 16, 1536)
        assert torch.equal(model.unpatchify(patches), x)


def test_video_target_undoes_the_data_normalisation_of_the_run():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = build_model(ModelConfig(name="videoconvmae_tiny_patch16", num_frames=4, img_size=32, norm_pix_loss=False),
                        data=DataConfig(mean=list(mean), std=list(std)))
    assert (model.data_mean, model.data_std) == (mean, std)
    x = torch.randn(1, 3, 4, 32, 32)
    pixels = x * torch.tensor(std).view(1, 3, 1, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(model.unpatchify(model.target(x)), pixels)
    default = build_model(ModelConfig(name="videoconvmae_tiny_patch16", num_frames=4, img_size=32))
    assert default.data_mean == (0.485, 0.456, 0.406) and default.data_std == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match=r"data_mean/data_std \(config data.mean/data.std\) need 3 values"):
        _video_model(data_mean=(0.5, 0.5))
