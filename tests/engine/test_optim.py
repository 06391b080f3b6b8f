import pytest
import torch
from torch import nn

from video_mcmae.config import ConfigError, load_config
from video_mcmae.engine.optim import build_optimizer, param_groups


class LayeredNet(nn.Module):
    """Stem (id 0), two blocks (ids 1, 2), head (id 3 = num_layers), plus a position table."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.stem = nn.Linear(3, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(2))
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    num_layers = 3

    def get_layer_id(self, name):
        if name.startswith(("pos_embed", "stem")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers

    def no_weight_decay(self):
        return {"pos_embed"}


def _by_param(groups, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in groups for p in g["params"]}


def test_layer_decay_and_no_decay_assignment():
    model = LayeredNet()
    groups = _by_param(param_groups(model, weight_decay=0.05, layer_decay=0.5), model)
    expected_scale = {"pos_embed": 0.125, "stem.weight": 0.125, "stem.bias": 0.125,
                      "blocks.0.0.weight": 0.25, "blocks.0.1.weight": 0.25, "blocks.1.1.bias": 0.5,
                      "head.weight": 1.0, "head.bias": 1.0}
    for name, scale in expected_scale.items():
        assert groups[name]["lr_scale"] == pytest.approx(scale), name
    decayed = {n for n, g in groups.items() if g["wd_scale"] == 1.0}
    assert decayed == {"stem.weight", "blocks.0.1.weight", "blocks.1.1.weight", "head.weight"}
    assert all(groups[n]["weight_decay"] == 0.0 for n in groups if n not in decayed)
    assert all(groups[n]["weight_decay"] == 0.05 for n in decayed)
    assert not any(n.startswith("frozen") for n in groups)  # only trainable parameters


def test_no_layer_decay_keeps_two_groups():
    model = LayeredNet()
    groups = param_groups(model, weight_decay=0.05)
    assert sorted(g["group_name"] for g in groups) == ["layer0_decay", "layer0_no_decay"]
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_layer_decay_needs_layer_ids():
    with pytest.raises(ConfigError, match="optim.layer_decay=0.75 needs a model with get_layer_id"):
        param_groups(nn.Linear(2, 2), 0.05, layer_decay=0.75)


def test_adamw_betas_eps_from_config_and_real_classifier_groups():
    import timm

    import video_mcmae.models  # noqa: F401  (registers presets)

    cfg = load_config(None, ["optim.betas=[0.8, 0.99]", "optim.eps=1e-6", "optim.layer_decay=0.75"])
    model = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-6
    groups = _by_param(opt.param_groups, model)
    last = model.num_layers
    assert groups["head.weight"]["lr_scale"] == 1.0
    assert groups["blocks3.0.mlp.fc1.weight"]["lr_scale"] == pytest.approx(0.75 ** (last - 1))
    assert groups["patch_embed1.proj.weight"]["lr_scale"] == pytest.approx(0.75 ** last)
    for name in model.no_weight_decay():
        if name in groups:
            assert groups[name]["wd_scale"] == 0.0
