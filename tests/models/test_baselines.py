"""Trivial baselines of the pretraining loss (models/baselines.py): exact values on a hand-made
target and mask, the nearest-visible rule, and the model method in the loss's target space."""
import timm
import torch

from video_mcmae.models.baselines import BASELINES, log_key, nearest_visible, trivial_baselines

# grid (T, H, W) = (2, 1, 3): tokens 0-2 at t=0 (w = 0, 1, 2), tokens 3-5 at t=1
GRID = (2, 1, 3)
TARGET = torch.tensor([[[1., 1.], [2., 0.], [3., 3.], [0., 0.], [4., 2.], [1., -1.]]])
MASK = torch.tensor([[False, True, True, True, True, False]])  # visible: token 0 (t=0), token 5 (t=1)


def test_nearest_visible_prefers_the_same_time_index_then_space_then_the_lowest_index():
    # token 2 = (t0, w2): the visible token 5 = (t1, w2) is nearer in 3D, token 0 = (t0, w0) shares its time
    assert nearest_visible(MASK, GRID).tolist() == [[0, 0, 0, 5, 5, 5]]
    # no visible token at t=0: the nearest time index, then the nearest in space
    mask = torch.tensor([[True, True, True, True, False, False]])
    assert nearest_visible(mask, GRID).tolist() == [[4, 4, 5, 4, 4, 5]]
    # equidistant visible tokens: the lower index
    assert nearest_visible(torch.tensor([[False, True, False]]), (1, 1, 3)).tolist() == [[0, 0, 2]]
    # 2D grid: space only
    assert nearest_visible(torch.tensor([[True, True, True, False]]), (2, 2)).tolist() == [[3, 3, 3, 3]]


def test_baselines_exact_values_on_a_hand_made_target():
    values = trivial_baselines(TARGET, MASK, GRID)
    assert set(values) == {log_key(name) for name in BASELINES} == {"baseline_zero", "baseline_mean", "baseline_nearest"}
    # masked tokens 1-4; zero: mean square per token (2, 9, 0, 10) averaged
    assert values["baseline_zero"] == 5.25
    # best constant: the masked mean [2.25, 1.25]; per-token errors 0.8125, 1.8125, 3.3125, 1.8125
    assert values["baseline_mean"] == 1.9375
    # nearest: tokens 1, 2 copy token 0 [1, 1]; tokens 3, 4 copy token 5 [1, -1]; errors 1, 4, 1, 9
    assert values["baseline_nearest"] == 3.75


def test_baselines_score_only_the_tokens_a_decoder_mask_keeps():
    scored = torch.tensor([[False, True, False, False, True, False]])  # tokens 2 and 3 dropped by the decoder
    values = trivial_baselines(TARGET, MASK, GRID, scored)
    assert values["baseline_zero"] == 6.0  # tokens 1 and 4 of the errors above: (2 + 10) / 2
    assert values["baseline_mean"] == 1.0  # their mean [3, 1]: errors 1 and 1
    assert values["baseline_nearest"] == 5.0  # still copied from the visible tokens 0 and 5: errors 1 and 9


def test_best_constant_is_the_best_single_vector():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 6, 4, generator=gen)
    mask = torch.rand(3, 6, generator=gen).argsort(1) < 4
    best = trivial_baselines(target, mask, GRID)["baseline_mean"]
    for _ in range(20):
        other = target[mask].mean(0) + 0.1 * torch.randn(4, generator=gen)
        assert ((target[mask] - other) ** 2).mean() > best


def test_model_baselines_are_in_the_losss_target_space():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, mask_ratio=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    values = model.trivial_baselines(x, mask)
    assert values == trivial_baselines(model.target(x), mask, model.grid_size)
    zero = model.forward_loss(x, torch.zeros(2, mask.shape[1], model.patch_dim), mask)
    torch.testing.assert_close(torch.tensor(values["baseline_zero"]), zero)
    raw = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, mask_ratio=0.5,
                            norm_pix_loss=False)
    assert raw.trivial_baselines(x, mask)["baseline_zero"] != values["baseline_zero"]
