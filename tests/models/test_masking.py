import pytest
import timm
import torch

import video_mcmae.models  # noqa: F401
from video_mcmae.models.masking import check_mask, draw_mask, random_masking, tube_masking, upsample_mask


def test_tube_mask_count_and_same_pattern_at_every_time_step():
    grid = (8, 14, 14)
    mask = tube_masking(3, grid, 0.9, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (3, 8 * 196)
    per_frame = mask.view(3, 8, 196)
    assert (per_frame.sum(-1) == 176).all()  # int(0.9 * 196)
    assert (per_frame == per_frame[:, :1]).all()
    assert not (per_frame[0] == per_frame[1]).all()  # samples draw their own pattern


def test_random_mask_count_and_not_a_tube():
    mask = random_masking(4, (8, 14, 14), 0.9, torch.Generator().manual_seed(0))
    assert (mask.sum(1) == int(0.9 * 1568)).all()
    per_frame = mask.view(4, 8, 196)
    assert not (per_frame == per_frame[:, :1]).all()


def test_masks_are_reproducible_from_a_seeded_generator():
    a = draw_mask("tube", 2, (4, 6, 6), 0.75, torch.Generator().manual_seed(3))
    b = draw_mask("tube", 2, (4, 6, 6), 0.75, torch.Generator().manual_seed(3))
    c = draw_mask("tube", 2, (4, 6, 6), 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_upsample_mask_is_nearest_neighbour():
    grid = (2, 3, 4)
    mask = random_masking(2, grid, 0.5, torch.Generator().manual_seed(0))
    up = upsample_mask(mask, grid, (1, 4, 4))
    assert up.shape == (2, 2, 12, 16)
    coarse = mask.view(2, *grid)
    for t in range(2):
        for h in range(12):
            for w in range(16):
                assert torch.equal(up[:, t, h, w], coarse[:, t, h // 4, w // 4])


def test_model_stage_masks_follow_the_stage3_mask():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=48)
    mask = model.draw_mask(torch.zeros(2, 3, 4, 48, 48), torch.Generator().manual_seed(0))
    keep1, keep2 = model.stage_keep_masks(mask)
    assert keep1.shape == (2, 2, 12, 12, 1) and keep2.shape == (2, 2, 6, 6, 1)
    coarse = mask.view(2, 2, 3, 3)
    assert torch.equal(keep2[..., 0].bool(), ~coarse.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.equal(keep1[..., 0].bool(), ~coarse.repeat_interleave(4, 2).repeat_interleave(4, 3))


@pytest.mark.parametrize("img_size", [32, 80, (48, 96)])
def test_2d_masks_work_at_any_size_divisible_by_16(img_size):
    model = timm.create_model("convmae_convvit_tiny_patch16", img_size=img_size)
    x = torch.randn(2, 3, *model.input_size)
    _, pred, mask = model(x, generator=torch.Generator().manual_seed(0))
    num_tokens = model.grid_size[0] * model.grid_size[1]
    assert mask.shape == (2, num_tokens) and (mask.sum(1) == int(0.75 * num_tokens)).all()
    assert pred.shape == (2, num_tokens, 768)


def test_forward_uses_a_given_mask_and_returns_it():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32)
    mask = tube_masking(2, model.grid_size, 0.5, torch.Generator().manual_seed(1))
    _, _, returned = model(torch.randn(2, 3, 4, 32, 32), mask=mask)
    assert torch.equal(returned, mask)


def test_bad_masks_and_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="same number"):
        check_mask(torch.tensor([[True, False], [True, True]]), 2, (2,))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        check_mask(torch.zeros(2, 5, dtype=torch.bool), 2, (2, 2))
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(1, (4, 4), 1.0)
    with pytest.raises(ValueError, match="mask_type"):
        timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, mask_type="block")
    with pytest.raises(ValueError, match="tube masking needs"):
        timm.create_model("convmae_convvit_tiny_patch16", img_size=32, mask_type="tube")
