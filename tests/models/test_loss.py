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


def test_norm_pix_std_floor_bounds_the_per_cube_std():
    """With a floor, a flat cube (codec noise) is divided by the floor instead of its own tiny std;
    cubes with more structure than the floor keep the official target."""
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 4, 32, 32)
    pixels[:, :, :2, :16, :16] = 0.5 + 1e-3 * torch.randn(1, 3, 2, 16, 16)  # token 0 is flat
    x = (pixels - MEAN.view(1, 3, 1, 1, 1)) / STD.view(1, 3, 1, 1, 1)
    official = _video_model().target(x)
    floored = _video_model(norm_pix_std_floor=0.05).target(x)
    torch.testing.assert_close(floored[0, 1:], official[0, 1:])
    cube = pixels[0, :, :2, :16, :16]  # (3, 2, 16, 16)
    for c in range(3):
        expected = (cube[c] - cube[c].mean()) / 0.05
        torch.testing.assert_close(floored[0, 0].view(2, 16, 16, 3)[..., c], expected, atol=1e-5, rtol=1e-5)
    assert official[0, 0].abs().max() > 10 * floored[0, 0].abs().max()


@pytest.mark.parametrize("name,kwargs", [("videoconvmae_tiny_patch16", dict(num_frames=4, img_size=32)),
                                         ("convmae_convvit_tiny_patch16", dict(img_size=32))])
@pytest.mark.parametrize("floor", [0.0, 0.3])
def test_unnormalize_target_inverts_target(name, kwargs, floor):
    model = timm.create_model(name, norm_pix_std_floor=floor, **kwargs)
    x = torch.randn(2, 3, *model.input_size)
    x[..., :16, :16] *= 0.01  # a patch flatter than the floor
    back = model.unnormalize_target(x, model.target(x))
    torch.testing.assert_close(back, model.target_pixels(x).flatten(2), atol=1e-5, rtol=1e-5)


def test_norm_pix_std_floor_is_a_model_kwarg():
    model = build_model(ModelConfig(name="videoconvmae_tiny_patch16", num_frames=4, img_size=32,
                                    kwargs={"norm_pix_std_floor": 0.01}))
    assert model.norm_pix_std_floor == 0.01
    assert _video_model().norm_pix_std_floor == 0.0
    with pytest.raises(ValueError, match="norm_pix_std_floor must be >= 0"):
        _video_model(norm_pix_std_floor=-0.1)
