"""Decoder masking (VideoMAE V2's dual masking): the running-cell and random decoder masks, and the
decoder-masked forward, loss and baselines of every pretraining model; ratio 0 is the plain
forward bit for bit."""
import pytest
import timm
import torch

from video_mcmae.config import ModelConfig
from video_mcmae.models import build_model
from video_mcmae.models.masking import (
    RUNNING_CELL, check_decoder_mask, draw_decoder_mask, random_masking, running_cell_decoder_masking, tube_masking,
    upsample_mask,
)

GRID = (8, 14, 14)  # a 16 x 224 x 224 clip
CELL = RUNNING_CELL[0] * RUNNING_CELL[1]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kept(mask: torch.Tensor, decoder_mask: torch.Tensor) -> torch.Tensor:
    return mask & ~decoder_mask


# -- the masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, per_frame", [(0.5, 88), (0.25, 132), (0.75, 44)])
def test_running_cell_keeps_exactly_the_share_of_each_frames_masked_cubes(ratio, per_frame):
    mask = tube_masking(4, GRID, 0.9, gen(0))  # 176 masked per frame
    decoder_mask = draw_decoder_mask("running_cell", mask, GRID, ratio, gen(1))
    assert decoder_mask.dtype == torch.bool and decoder_mask.shape == mask.shape
    assert not (decoder_mask & ~mask).any()  # drawn among the masked positions only
    assert (kept(mask, decoder_mask).view(4, 8, -1).sum(-1) == per_frame).all()


def test_running_cell_with_random_encoder_masks_rounds_each_frame_and_keeps_the_total():
    mask = random_masking(4, GRID, 0.9, gen(0))  # int(0.9 * 1568) = 1411 masked, per frame varying
    decoder_mask = draw_decoder_mask("running_cell", mask, GRID, 0.5, gen(1))
    share = 0.5 * mask.view(4, 8, -1).sum(-1)
    per_frame = kept(mask, decoder_mask).view(4, 8, -1).sum(-1)
    assert ((per_frame == share.floor()) | (per_frame == share.ceil())).all()
    assert (per_frame.sum(1) == 706).all()  # 705.5, halves up


def test_running_cell_covers_every_masked_position_in_every_cell_size_frames():
    mask = tube_masking(4, GRID, 0.9, gen(0))
    decoder_mask = draw_decoder_mask("running_cell", mask, GRID, 0.5, gen(1))
    per_frame = kept(mask, decoder_mask).view(4, 8, -1)
    masked = mask.view(4, 8, -1)[:, 0]
    for start in range(8 - CELL + 1):
        assert torch.equal(per_frame[:, start:start + CELL].any(1), masked)
    assert not torch.equal(per_frame[:, 0], masked)  # a frame alone does not cover them


def v2_cell(pointer: int, dropped: int) -> list:
    """VideoMAE V2's running cell read at `pointer`: a queue of `dropped` ones then zeros, rotated;
    -> kept flags of the 4 positions of a 2 x 2 cell in raster order."""
    queue = [1] * dropped + [0] * (CELL - dropped)
    return [queue[(i + pointer) % CELL] == 0 for i in range(CELL)]


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_without_encoder_masking_it_is_videomae_v2s_running_cell(ratio):
    grid, batch = (8, 4, 6), 8
    everything = torch.ones(batch, 8 * 4 * 6, dtype=torch.bool)
    decoder_mask = running_cell_decoder_masking(everything, grid, ratio, gen(0))
    cells = (~decoder_mask).view(batch, 8, 2, 2, 3, 2).permute(0, 1, 2, 4, 3, 5).reshape(batch, 8, 6, CELL)
    assert (cells == cells[:, :, :1]).all()  # one pattern tiles the frame
    pointers = set()
    for sample in cells[:, :, 0].tolist():
        (pointer,) = [p for p in range(CELL) if all(sample[t] == v2_cell(p + t, int(CELL * ratio)) for t in range(8))]
        pointers.add(pointer)
    assert len(pointers) > 1  # the offset is drawn per sample


@pytest.mark.parametrize("encoder", [tube_masking, random_masking])
@pytest.mark.parametrize("ratio, expected", [(0.5, {tube_masking: 704, random_masking: 706}),
                                             (0.3, {tube_masking: 986, random_masking: 988})])
def test_random_decoder_mask_keeps_the_rounded_share_of_each_sample(encoder, ratio, expected):
    mask = encoder(4, GRID, 0.9, gen(0))  # 1408 (tube) or 1411 masked
    decoder_mask = draw_decoder_mask("random", mask, GRID, ratio, gen(1))
    assert not (decoder_mask & ~mask).any()
    assert (kept(mask, decoder_mask).sum(1) == expected[encoder]).all()
    per_frame = kept(mask, decoder_mask).view(4, 8, -1).sum(-1)
    assert len(per_frame.unique()) > 1  # not a per-frame share


@pytest.mark.parametrize("mask_type", ["running_cell", "random"])
def test_decoder_masks_are_seeded_and_drawn_per_sample(mask_type):
    mask = tube_masking(3, GRID, 0.9, gen(0))
    a = draw_decoder_mask(mask_type, mask, GRID, 0.5, gen(5))
    assert torch.equal(a, draw_decoder_mask(mask_type, mask, GRID, 0.5, gen(5)))
    assert not torch.equal(a, draw_decoder_mask(mask_type, mask, GRID, 0.5, gen(6)))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])


def test_2d_grids_are_one_frame():
    mask = random_masking(2, (14, 14), 0.75, gen(0))  # 147 masked
    for mask_type in ("running_cell", "random"):
        decoder_mask = draw_decoder_mask(mask_type, mask, (14, 14), 0.5, gen(1))
        assert (kept(mask, decoder_mask).sum(1) == 74).all()


def test_bad_decoder_masks_and_settings_raise_clear_errors():
    mask = tube_masking(2, (2, 4, 4), 0.5, gen(0))
    with pytest.raises(ValueError, match="unknown decoder_mask_type 'run_cell'"):
        draw_decoder_mask("run_cell", mask, (2, 4, 4), 0.5)
    with pytest.raises(ValueError, match=r"decoder_mask_ratio must be in \[0, 1\)"):
        draw_decoder_mask("random", mask, (2, 4, 4), 1.0)
    with pytest.raises(ValueError, match="keeps none of the 1 masked positions"):
        draw_decoder_mask("random", tube_masking(2, (1, 2, 2), 0.25), (1, 2, 2), 0.9)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        check_decoder_mask(torch.zeros(2, 3, dtype=torch.bool), mask)
    with pytest.raises(ValueError, match="only masked positions"):
        check_decoder_mask(~mask, mask)
    uneven = torch.zeros_like(mask)
    uneven[0, mask[0].nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number of masked positions"):
        check_decoder_mask(uneven, mask)
    for kwargs, match in ((dict(decoder_mask_type="frame"), "unknown decoder_mask_type"),
                          (dict(decoder_mask_ratio=-0.1), "decoder_mask_ratio must be in")):
        with pytest.raises(ValueError, match=match):
            timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, **kwargs)


# -- the models ---------------------------------------------------------------------------------------
MODELS = [  # id: (preset, overrides); grids of 14-32 tokens so each mask keeps several cubes
    ("video", "videoconvmae_tiny_patch16", dict(num_frames=4, img_size=64)),
    ("video-dense", "videoconvmae_tiny_patch16", dict(num_frames=4, img_size=64, visible_only=False)),
    ("msd", "videoconvmae_tiny_msd_patch16", dict(num_frames=4, img_size=64)),
    ("msd-dense", "videoconvmae_tiny_msd_patch16", dict(num_frames=4, img_size=64, visible_only=False)),
    ("image", "convmae_convvit_tiny_patch16", dict(img_size=64)),
    ("image-dense", "convmae_convvit_tiny_patch16", dict(img_size=64, visible_only=False)),
]
MODEL_IDS = [m[0] for m in MODELS]


def make(preset, overrides, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(preset, **overrides, **kwargs)


def clip(model, seed=0):
    return torch.randn(2, 3, *model.input_size, generator=gen(seed))


def todays_loss(model, x, mask):
    """The pretraining loss as computed before decoder masking existed: the decoder on every token."""
    latent = model.forward_encoder(x, mask)
    tokens = model.decoder_embed(latent)
    full = model.mask_token.expand(*mask.shape, -1).masked_scatter(~mask.unsqueeze(-1), tokens)
    full = full + model.decoder_pos_embed
    for blk in model.decoder_blocks:
        full = blk(full)
    pred = model.decoder_pred(model.decoder_norm(full))
    loss = (pred - model.target(x)).pow(2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize("name,preset,overrides", MODELS, ids=MODEL_IDS)
def test_ratio_zero_is_todays_loss_and_gradients_bit_for_bit(name, preset, overrides):
    model = make(preset, overrides, decoder_mask_ratio=0.0, decoder_mask_type="random").train()
    x = clip(model)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    g = gen(3)
    loss = model(x, generator=g)[0]
    grads = torch.autograd.grad(loss, params)
    drawn_alone = gen(3)
    mask = model.draw_mask(x, drawn_alone)
    assert torch.equal(g.get_state(), drawn_alone.get_state())  # no extra draw: later masks are today's too
    reference = todays_loss(model, x, mask)
    assert torch.equal(loss, reference)
    for n, got, want in zip(names, grads, torch.autograd.grad(reference, params)):
        assert torch.equal(got, want), n


def _masks(model, x, seed=1):
    g = gen(seed)
    mask = model.draw_mask(x, g)
    return mask, model.draw_decoder_mask(mask, g)


def _replace_cube(model, x, mask, sample, token, seed=9):
    """x with the pixels of one token's cube of one sample replaced by noise."""
    one = torch.zeros_like(mask)
    one[sample, token] = True
    pixels = upsample_mask(one, model.grid_size, model.patch_size_nd).unsqueeze(1)
    return torch.where(pixels, 10 * torch.randn(x.shape, generator=gen(seed)), x)


@pytest.mark.parametrize("name,preset,overrides", MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("mask_type", ["running_cell", "random"])
def test_a_dropped_cubes_target_does_not_reach_the_loss(name, preset, overrides, mask_type):
    model = make(preset, overrides, decoder_mask_ratio=0.5, decoder_mask_type=mask_type).train()
    x = clip(model)
    mask, decoder_mask = _masks(model, x)
    assert decoder_mask is not None and decoder_mask.any()
    loss, pred, _ = model(x, mask=mask, decoder_mask=decoder_mask)
    dropped = decoder_mask[0].nonzero()[0].item()
    other, other_pred, _ = model(_replace_cube(model, x, mask, 0, dropped), mask=mask, decoder_mask=decoder_mask)
    assert torch.equal(other, loss) and torch.equal(other_pred, pred)
    scored = kept(mask, decoder_mask)[0].nonzero()[0].item()
    changed, _, _ = model(_replace_cube(model, x, mask, 0, scored), mask=mask, decoder_mask=decoder_mask)
    assert changed != loss  # the check can fail: a kept cube's target does reach it


@pytest.mark.parametrize("name,preset,overrides", MODELS, ids=MODEL_IDS)
def test_the_loss_is_the_mse_over_the_kept_cubes(name, preset, overrides):
    model = make(preset, overrides, decoder_mask_ratio=0.5).train()
    x = clip(model)
    mask, decoder_mask = _masks(model, x)
    loss, pred, _ = model(x, mask=mask, decoder_mask=decoder_mask)
    scored = kept(mask, decoder_mask)
    torch.testing.assert_close(loss, (pred - model.target(x))[scored].pow(2).mean())
    assert (pred[decoder_mask] == 0).all() and (pred[scored] != 0).any(-1).all()
    (grad,) = torch.autograd.grad(model.forward_loss(x, pred, mask, decoder_mask), pred)
    assert (grad[~scored] == 0).all() and (grad[scored] != 0).any(-1).all()


@pytest.mark.parametrize("name,preset,overrides", MODELS[::2], ids=MODEL_IDS[::2])
def test_the_decoder_sees_the_visible_tokens_and_the_kept_positions_with_their_embeddings(name, preset, overrides):
    model = make(preset, overrides, decoder_mask_ratio=0.5).train()
    x = clip(model)
    mask, decoder_mask = _masks(model, x)
    seen = []
    model.decoder_blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(x, mask=mask, decoder_mask=decoder_mask)
    with torch.no_grad():
        tokens = model.decoder_embed(model.forward_encoder(x, mask))
        full = model.mask_token.expand(*mask.shape, -1).masked_scatter(~mask.unsqueeze(-1), tokens)
        full = full + model.decoder_pos_embed
    decoded = ~decoder_mask
    assert seen[0].shape == (2, int((~mask[0]).sum() + kept(mask, decoder_mask)[0].sum()), full.shape[-1])
    torch.testing.assert_close(seen[0], full[decoded].view(2, -1, full.shape[-1]), rtol=0, atol=0)


@pytest.mark.parametrize("name,preset,overrides", MODELS[::2], ids=MODEL_IDS[::2])
def test_eval_mode_scores_the_full_masked_set(name, preset, overrides):
    model = make(preset, overrides, decoder_mask_ratio=0.5)
    plain = make(preset, overrides)
    x = clip(model)
    mask = model.draw_mask(x, gen(1))
    model.eval()
    plain.eval()
    with torch.no_grad():
        full = plain(x, mask=mask)[0]
        assert torch.equal(model(x, mask=mask, generator=gen(2))[0], full)
        model.train()  # in training mode: an all-False decoder mask asks for the full set explicitly
        torch.testing.assert_close(model(x, mask=mask, decoder_mask=torch.zeros_like(mask))[0], full)
        assert model(x, mask=mask, generator=gen(2))[0] != full


def test_baselines_score_the_kept_cubes():
    model = make(*MODELS[0][1:], decoder_mask_ratio=0.5).train()
    x = clip(model)
    mask, decoder_mask = _masks(model, x)
    values = model.trivial_baselines(x, mask, decoder_mask)
    zero = model.forward_loss(x, torch.zeros(*mask.shape, model.patch_dim), mask, decoder_mask)
    assert values["baseline_zero"] == pytest.approx(zero.item(), rel=1e-6)
    assert values != model.trivial_baselines(x, mask)


def test_decoder_mask_settings_reach_the_model_from_timm_and_the_config():
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, decoder_mask_ratio=0.5,
                              decoder_mask_type="random")
    assert (model.decoder_mask_ratio, model.decoder_mask_type) == (0.5, "random")
    default = timm.create_model("convmae_convvit_tiny_patch16", img_size=32)
    assert (default.decoder_mask_ratio, default.decoder_mask_type) == (0.0, "running_cell")
    built = build_model(ModelConfig(name="videoconvmae_tiny_msd_patch16", num_frames=4, img_size=32,
                                    decoder_mask_ratio=0.25, decoder_mask_type="random"))
    assert (built.decoder_mask_ratio, built.decoder_mask_type) == (0.25, "random")
