"""Visible-only execution of the conv stages equals the dense masked path: loss and every gradient."""
import pytest
import timm
import torch

import video_mcmae.models  # noqa: F401  (registers the presets)

CASES = {  # id: (preset, overrides, mask_type, mask_ratio)
    "3d-tube": ("videoconvmae_tiny_patch16", dict(num_frames=4, img_size=48), "tube", 0.5),
    "3d-random": ("videoconvmae_tiny_patch16", dict(num_frames=6, img_size=48, conv_kernel_size=(3, 3, 3)),
                  "random", 0.6),
    "3d-msd-tube": ("videoconvmae_tiny_msd_patch16", dict(num_frames=4, img_size=48), "tube", 0.75),
    "2d-msd-random": ("convmae_convvit_tiny_patch16", dict(img_size=48), "random", 0.5),
    "2d-random": ("convmae_convvit_tiny_patch16", dict(img_size=80, msd=False, conv_kernel_size=7), "random", 0.75),
}


def _loss_and_grads(model, x, mask, visible_only):
    model.visible_only = visible_only
    model.zero_grad(set_to_none=True)
    loss, pred, _ = model(x, mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), pred.detach(), grads


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_visible_only_matches_dense(case):
    preset, overrides, mask_type, ratio = CASES[case]
    torch.manual_seed(0)
    model = timm.create_model(preset, mask_type=mask_type, mask_ratio=ratio, **overrides)
    x = torch.randn(2, 3, *model.input_size)
    mask = model.draw_mask(x, torch.Generator().manual_seed(1))
    loss_s, pred_s, grads_s = _loss_and_grads(model, x, mask, visible_only=True)
    loss_d, pred_d, grads_d = _loss_and_grads(model, x, mask, visible_only=False)
    assert _rel(loss_s, loss_d) <= 1e-5
    assert _rel(pred_s[mask], pred_d[mask]) <= 1e-5
    assert grads_s.keys() == grads_d.keys()
    for name in ("patch_embed1.proj.weight", "blocks1.0.attn.weight", "blocks2.0.attn.bias"):
        assert grads_d[name].abs().max() > 0, f"{name} gets no gradient: the comparison would be vacuous"
    for name, grad in grads_d.items():
        assert _rel(grads_s[name], grad) <= 1e-5, f"gradient of {name}: relative error {_rel(grads_s[name], grad):.1e}"


def test_visible_only_reads_no_masked_input():
    """Changing the clip under masked tokens changes nothing on the visible-only path."""
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_msd_patch16", num_frames=4, img_size=48)
    x = torch.randn(1, 3, *model.input_size)
    mask = model.draw_mask(x, torch.Generator().manual_seed(2))
    covered = model.unpatchify(mask[..., None].float().expand(-1, -1, model.patch_dim)).bool()
    y = torch.where(covered, torch.randn_like(x), x)
    latent = model.forward_encoder(x, mask)
    assert torch.equal(latent, model.forward_encoder(y, mask))


def test_visible_rows_follow_the_stage3_token_order():
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=48)
    x = torch.randn(2, 3, *model.input_size)
    mask = model.draw_mask(x, torch.Generator().manual_seed(3))
    stage1, stage2, tokens = model.forward_stages(x, model.layout(mask, visible=True))
    n_vis = int((~mask[0]).sum())
    assert tokens.shape == (2, n_vis, model.embed_dims[2])
    assert stage2.rows.shape == (2 * n_vis * 4, model.embed_dims[1])
    assert stage1.rows.shape == (2 * n_vis * 16, model.embed_dims[0])
    # every visible stage-1 cell appears once, and only visible cells do
    keep1 = ~model.stage_keep_masks(mask)[0].squeeze(-1).bool()
    assert torch.equal(stage1.grid.index_map < 0, keep1)
    assert sorted(stage1.grid.index_map[stage1.grid.index_map >= 0].tolist()) == list(range(stage1.rows.shape[0]))
