"""ConvMAE (MCMAE): hybrid convolution-transformer encoder, its masked-autoencoder pretraining model
and the ConvViT classifier. The encoder code is shared with the video models (`video_convmae.py`);
this module also holds the 2D models with the official key layout.

Encoder: three stages. Stages 1-2: patch embedding + masked conv blocks on a channels-last grid;
stage 3: patch embedding + linear (`patch_embed4`) + position table + transformer blocks. One stage
loop (`ConvViTEncoder.forward_stages`) serves classifiers and pretraining; its layout
(`models.visible`) runs it on the whole grid or on the visible positions only.
"""
import contextlib
import math
from typing import Optional

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import to_2tuple, trunc_normal_
from timm.models import register_model
from torch.utils.checkpoint import checkpoint

from .baselines import trivial_baselines
from .embed import PatchEmbed, build_pos_embed, channels_first
from .layers import Block, ConvBlock, Pointwise
from .masking import (check_decoder_mask, check_decoder_mask_settings, check_mask, check_mask_settings,
                      draw_decoder_mask, draw_mask, scored, upsample_mask)
from .visible import DenseLayout, VisibleLayout

__all__ = ["ConvViTEncoder", "ConvMAEBase", "ConvViTBase", "ConvMAE", "ConvViT", "create_preset"]


def _stage_grids(input_size: tuple, strides: tuple) -> list:
    """Grid after each stage; raises when the input is not divisible by the cumulative stride."""
    grids, size = [], tuple(input_size)
    total = tuple(math.prod(s[d] for s in strides) for d in range(len(input_size)))
    if any(n % t for n, t in zip(size, total)):
        raise ValueError(f"input size {'x'.join(map(str, size))} must be divisible by the total stride "
                         f"{'x'.join(map(str, total))}; change num_frames/img_size")
    for stride in strides:
        size = tuple(n // s for n, s in zip(size, stride))
        grids.append(size)
    return grids


def _mul(a: tuple, b: tuple) -> tuple:
    return tuple(x * y for x, y in zip(a, b))


class ConvViTEncoder(nn.Module):
    """The hybrid encoder's modules, shared by pretraining models and classifiers (2D and 3D).

    Registration order matters: it fixes the state-dict order of the official 2D checkpoints.
    """

    def __init__(self, input_size: tuple, strides: tuple, in_chans: int = 3, embed_dims: tuple = (256, 384, 768),
                 depths: tuple = (2, 2, 11), num_heads: int = 12, mlp_ratio: float = 4.0,
                 conv_kernel_size: tuple = (5, 5), learnable_pos: bool = False, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, msd: bool = False,
                 dwconv_backend: str = "auto"):
        super().__init__()
        self.input_size = tuple(input_size)
        self.in_chans = in_chans
        self.strides = tuple(tuple(s) for s in strides)
        self.stage_grids = _stage_grids(self.input_size, self.strides)
        self.grid_size = self.stage_grids[2]
        self.patch_size_nd = _mul(_mul(self.strides[0], self.strides[1]), self.strides[2])
        self.embed_dims = tuple(embed_dims)
        self.embed_dim = embed_dims[2]
        self.msd = msd
        kernel = tuple(conv_kernel_size)
        if len(kernel) != len(self.input_size):
            raise ValueError(f"conv_kernel_size {kernel} must have {len(self.input_size)} entries")

        self.pos_embed = build_pos_embed(self.grid_size, embed_dims[2], learnable_pos)
        self.patch_embed1 = PatchEmbed(in_chans, embed_dims[0], self.strides[0])
        self.patch_embed2 = PatchEmbed(embed_dims[0], embed_dims[1], self.strides[1])
        self.patch_embed3 = PatchEmbed(embed_dims[1], embed_dims[2], self.strides[2])
        self.patch_embed4 = nn.Linear(embed_dims[2], embed_dims[2])
        if msd:
            conv = nn.Conv3d if len(self.input_size) == 3 else nn.Conv2d
            down1, down2 = _mul(self.strides[1], self.strides[2]), self.strides[2]
            self.stage1_output_decode = conv(embed_dims[0], embed_dims[2], down1, stride=down1)
            self.stage2_output_decode = conv(embed_dims[1], embed_dims[2], down2, stride=down2)
        # stochastic depth rises linearly over all blocks in order, as in the official ConvViT
        num_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.blocks1 = nn.ModuleList(
            ConvBlock(embed_dims[0], kernel, mlp_ratio, drop_rate, dpr[i], dwconv_backend) for i in range(depths[0]))
        self.blocks2 = nn.ModuleList(
            ConvBlock(embed_dims[1], kernel, mlp_ratio, drop_rate, dpr[depths[0] + i], dwconv_backend)
            for i in range(depths[1]))
        self.blocks3 = nn.ModuleList(
            Block(embed_dims[2], num_heads, mlp_ratio, True, drop_rate, attn_drop_rate, dpr[depths[0] + depths[1] + i])
            for i in range(depths[2]))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer blocks in the backward pass to save activation memory."""
        self.grad_checkpointing = enable

    def forward_blocks3(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks3:
            x = checkpoint(blk, x, use_reentrant=False) if self.grad_checkpointing and self.training else blk(x)
        return x

    @property
    def patch_size(self) -> int:
        return self.patch_size_nd[-1]

    def pos_tables(self) -> dict:
        """State-dict key -> grid of every encoder position table (used by `load_pretrained`)."""
        return {"pos_embed": self.grid_size}

    def no_weight_decay(self) -> set:
        """Parameters AdamW must not decay (`engine.optim.param_groups`): the position table."""
        return set(self.pos_tables())

    def stage_keep_masks(self, mask: torch.Tensor) -> tuple:
        """Float keep masks (1 = visible) for stage 1 and stage 2, shaped `(B, *S, 1)`."""
        down2 = self.strides[2]
        down1 = _mul(self.strides[1], down2)
        keep1 = ~upsample_mask(mask, self.grid_size, down1)
        keep2 = ~upsample_mask(mask, self.grid_size, down2)
        return keep1.unsqueeze(-1).float(), keep2.unsqueeze(-1).float()

    def layout(self, mask: torch.Tensor = None, visible: bool = False):
        """Where the stages run: every position (no mask), or the masked grid densely (the reference)
        or at its visible positions only (`visible`)."""
        if mask is None:
            return DenseLayout()
        if visible:
            return VisibleLayout(mask, self.grid_size, self.strides, self.stage_grids)
        return DenseLayout(mask, self.stage_keep_masks(mask))

    def forward_stages(self, x: torch.Tensor, layout) -> tuple:
        """Stages 1-2 and the stage-3 embedding of `x (B, C, *S)` -> (stage 1, stage 2, tokens).

        Stage outputs are channels-last grids (`DenseLayout`) or `VisibleStage` rows
        (`VisibleLayout`); the tokens `(B, L3 or N_vis, C3)` include the position table.
        """
        x = layout.input(x)
        stages = []
        for stage, (embed, blocks) in enumerate(((self.patch_embed1, self.blocks1), (self.patch_embed2, self.blocks2))):
            x = layout.embed(embed, x)
            for blk in blocks:
                x = layout.block(blk, x, stage)
            stages.append(layout.stage(x, stage))
        tokens = layout.tokens(layout.embed(self.patch_embed3, x))
        return stages[0], stages[1], self.patch_embed4(tokens) + layout.positions(self.pos_embed)

    def check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_chans, *self.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"model built for inputs (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}; "
                             "create the model with matching num_frames/img_size (load_pretrained resizes "
                             "position tables)")

    def _init_weights(self, linear_init, linear_types: tuple, xavier_embeds: tuple) -> None:
        """`linear_init` and zero bias for modules of `linear_types`, weight 1 and bias 0 for LayerNorms,
        xavier-uniform on the flattened weight of the `xavier_embeds` patch embeddings; every other
        convolution keeps nn.Conv's default initialisation."""
        for m in self.modules():
            if isinstance(m, linear_types):
                linear_init(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for embed in xavier_embeds:
            nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))


class ConvMAEBase(ConvViTEncoder):
    """Masked-autoencoder pretraining (2D or 3D):
    `forward(x, mask=None, generator=None, decoder_mask=None) -> (loss, pred, mask)`.

    The conv stages run at visible positions only (`visible_only=True`, `models.visible`) or densely with
    masked depthwise convs (`visible_only=False`, the reference); the transformer then sees the visible
    tokens only, and the decoder sees them plus mask tokens and predicts every token's patch.

    Decoder masking (VideoMAE V2's dual masking, `decoder_mask_ratio` > 0, in training mode only):
    the decoder sees the visible tokens plus the mask tokens of a share of the masked positions
    (`decoder_mask_type`, `models.masking`), and the loss scores those kept cubes only. In eval mode
    the decoder reconstructs every masked cube, so the loss is scored on the full masked set.
    """

    def __init__(self, input_size: tuple, strides: tuple, in_chans: int = 3, embed_dims: tuple = (256, 384, 768),
                 depths: tuple = (2, 2, 11), num_heads: int = 12, mlp_ratio: float = 4.0,
                 conv_kernel_size: tuple = (5, 5), decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mask_ratio: float = 0.75, mask_type: str = "random",
                 norm_pix_loss: bool = True, norm_pix_std_floor: float = 0.0, msd: bool = True,
                 learnable_pos: bool = False, visible_only: bool = True, dwconv_backend: str = "auto",
                 decoder_mask_ratio: float = 0.0, decoder_mask_type: str = "running_cell"):
        super().__init__(input_size, strides, in_chans, embed_dims, depths, num_heads, mlp_ratio,
                         conv_kernel_size, learnable_pos, msd=msd, dwconv_backend=dwconv_backend)
        check_mask_settings(mask_type, mask_ratio, self.grid_size)
        self.mask_ratio = mask_ratio
        self.mask_type = mask_type
        check_decoder_mask_settings(decoder_mask_type, decoder_mask_ratio)
        self.decoder_mask_ratio = decoder_mask_ratio
        self.decoder_mask_type = decoder_mask_type
        self.norm_pix_loss = norm_pix_loss
        if not norm_pix_std_floor >= 0:
            raise ValueError(f"norm_pix_std_floor must be >= 0 (0 = the official per-patch std), got {norm_pix_std_floor}")
        self.norm_pix_std_floor = float(norm_pix_std_floor)
        self.visible_only = visible_only
        self.patch_dim = math.prod(self.patch_size_nd) * in_chans

        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = build_pos_embed(self.grid_size, decoder_embed_dim, learnable=False)
        self.norm = nn.LayerNorm(embed_dims[2], eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dims[2], decoder_embed_dim)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_dim)

        # the official ConvMAE's: only nn.Linear layers and the stage-3 embedding are xavier-initialised
        self._init_weights(nn.init.xavier_uniform_, (nn.Linear,), (self.patch_embed3,))
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set:
        """The position table and the mask token, as in VideoMAE."""
        return super().no_weight_decay() | {"mask_token"}

    # -- patches ---------------------------------------------------------------------------------
    def _patch_pattern(self) -> tuple:
        """einops patterns (grid side, patch side) and patch sizes, e.g. 'b c (t pt) (h ph) (w pw)'."""
        axes = "thw"[-len(self.input_size):]
        grid = "b c " + " ".join(f"({a} p{a})" for a in axes)
        patches = f"b ({' '.join(axes)}) ({' '.join('p' + a for a in axes)} c)"
        return grid, patches, {"p" + a: p for a, p in zip(axes, self.patch_size_nd)}, axes

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, L3, patch_dim), each patch flattened in (pt, ph, pw, c) order."""
        grid, patches, sizes, _ = self._patch_pattern()
        return rearrange(x, f"{grid} -> {patches}", **sizes)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L3, patch_dim) -> (B, C, *S)."""
        grid, patches, sizes, axes = self._patch_pattern()
        return rearrange(x, f"{patches} -> {grid}", **sizes, **dict(zip(axes, self.grid_size)))

    # -- target ----------------------------------------------------------------------------------
    def target_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The values the target is made of, `(B, L3, n, k)`: each patch as k groups of n values that
        `norm_pix_loss` standardises separately. Here (2D MAE): the normalised input, one group per patch."""
        return self.patchify(x).unsqueeze(-1)

    def _patch_std(self, var: torch.Tensor) -> torch.Tensor:
        """The official per-patch std from the unbiased variance: sqrt(var + 1e-6) (MAE)."""
        return (var + 1e-6) ** 0.5

    def _target_stats(self, x: torch.Tensor) -> tuple:
        pixels = self.target_pixels(x)
        mean, var = pixels.mean(dim=-2, keepdim=True), pixels.var(dim=-2, keepdim=True)
        return pixels, mean, self._patch_std(var).clamp(min=self.norm_pix_std_floor)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """MAE target `(B, L3, patch_dim)`: `target_pixels`, with `norm_pix_loss` each group
        standardised as (p - mean) / max(std, norm_pix_std_floor).

        The floor is in the units of `target_pixels`; 0 keeps the official std. With a floor, groups
        flatter than it (e.g. codec noise on a plain background) are no longer blown up to unit variance.
        """
        if not self.norm_pix_loss:
            return self.target_pixels(x).flatten(2)
        pixels, mean, std = self._target_stats(x)
        return ((pixels - mean) / std).flatten(2)

    def unnormalize_target(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Values in the target space `(B, L3, patch_dim)` (e.g. predictions) -> `target_pixels` units,
        undoing `target`'s normalisation with the statistics of `x`."""
        if not self.norm_pix_loss:
            return values
        pixels, mean, std = self._target_stats(x)
        return (values.reshape(pixels.shape) * std + mean).flatten(2)

    # -- masking ---------------------------------------------------------------------------------
    def draw_mask(self, x: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
        return draw_mask(self.mask_type, x.shape[0], self.grid_size, self.mask_ratio, generator, x.device)

    def draw_decoder_mask(self, mask: torch.Tensor, generator: torch.Generator = None) -> Optional[torch.Tensor]:
        """The decoder mask of a training step among the masked positions of `mask`, drawn from the
        same generator after it; None (every masked cube decoded) at ratio 0 or in eval mode."""
        if not (self.training and self.decoder_mask_ratio > 0):
            return None
        return draw_decoder_mask(self.decoder_mask_type, mask, self.grid_size, self.decoder_mask_ratio, generator)

    # -- encoder ---------------------------------------------------------------------------------
    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) + mask -> normalised visible tokens `(B, N_vis, C3)`."""
        layout = self.layout(mask, visible=self.visible_only)
        stage1, stage2, x = self.forward_stages(x, layout)
        x = self.forward_blocks3(x)
        if self.msd:
            x = x + layout.fuse(stage1, stage2, self.stage1_output_decode, self.stage2_output_decode)
        return self.norm(x)

    # -- decoder and loss ------------------------------------------------------------------------
    def forward_decoder(self, x: torch.Tensor, mask: torch.Tensor, decoder_mask: torch.Tensor = None) -> torch.Tensor:
        """Visible tokens -> predictions `(B, L3, patch_dim)` for every token (mask tokens fill the gaps).

        With a `decoder_mask` the decoder runs on the visible tokens and the kept mask tokens only,
        each with its position embedding; the rows of dropped positions are zero."""
        x = self.decoder_embed(x)
        full = self.mask_token.to(x.dtype).expand(mask.shape[0], mask.shape[1], -1)
        x = full.masked_scatter(~mask.unsqueeze(-1), x)
        x = x + self.decoder_pos_embed
        kept = None if decoder_mask is None else ~decoder_mask.unsqueeze(-1)
        if kept is not None:
            x = x.masked_select(kept).view(x.shape[0], -1, x.shape[-1])
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        if kept is not None:
            x = x.new_zeros(*mask.shape, x.shape[-1]).masked_scatter(kept, x)
        return x

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                     decoder_mask: torch.Tensor = None) -> torch.Tensor:
        """Mean squared error over the masked patches only (those the decoder keeps, with a `decoder_mask`)."""
        loss = (pred.float() - self.target(x.float())).pow(2).mean(dim=-1)
        mask = scored(mask, decoder_mask)
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    def trivial_baselines(self, x: torch.Tensor, mask: torch.Tensor, decoder_mask: torch.Tensor = None) -> dict:
        """The losses of trivial predictors on the tokens the loss scores (the masked ones, less those
        a `decoder_mask` drops), in the loss's target space:
        {'baseline_zero', 'baseline_mean', 'baseline_nearest': float} (`models.baselines`)."""
        with torch.no_grad():
            return trivial_baselines(self.target(x.float()), mask, self.grid_size, scored(mask, decoder_mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, generator: torch.Generator = None,
                decoder_mask: torch.Tensor = None) -> tuple:
        """`mask` and `decoder_mask` default to draws from `generator` (the decoder mask only in
        training mode with `decoder_mask_ratio` > 0, see `draw_decoder_mask`)."""
        self.check_input(x)
        if mask is None:
            mask = self.draw_mask(x, generator)
        else:
            check_mask(mask, x.shape[0], self.grid_size)
            mask = mask.to(x.device)
        if decoder_mask is None:
            decoder_mask = self.draw_decoder_mask(mask, generator)
        else:
            check_decoder_mask(decoder_mask, mask)
            decoder_mask = decoder_mask.to(x.device)
        latent = self.forward_encoder(x, mask)
        pred = self.forward_decoder(latent, mask, decoder_mask)
        return self.forward_loss(x, pred, mask, decoder_mask), pred, mask


class ConvViTBase(ConvViTEncoder):
    """Classifier on the unmasked encoder: mean pooling -> fc_norm -> dropout -> head."""

    def __init__(self, input_size: tuple, strides: tuple, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: tuple = (256, 384, 768), depths: tuple = (2, 2, 11), num_heads: int = 12,
                 mlp_ratio: float = 4.0, conv_kernel_size: tuple = (5, 5), learnable_pos: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 head_drop_rate: float = 0.0, head_init_scale: float = 0.001, global_pool: str = "avg",
                 dwconv_backend: str = "auto"):
        super().__init__(input_size, strides, in_chans, embed_dims, depths, num_heads, mlp_ratio,
                         conv_kernel_size, learnable_pos, drop_rate, attn_drop_rate, drop_path_rate,
                         dwconv_backend=dwconv_backend)
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' (official) or 'max', got {global_pool!r}")
        self.global_pool = global_pool
        self.num_classes = num_classes
        self.head_init_scale = head_init_scale
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dims[2], num_classes) if num_classes > 0 else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dims[2], eps=1e-6)
        self._init_weights(lambda w: trunc_normal_(w, std=0.02), (nn.Linear, Pointwise),
                           (self.patch_embed1, self.patch_embed2, self.patch_embed3))
        self._scale_head()

    def _scale_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(self.head_init_scale)
                self.head.bias.mul_(self.head_init_scale)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        device = self.fc_norm.weight.device
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=device)
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
            self._scale_head()
        else:
            self.head = nn.Identity()

    @property
    def num_layers(self) -> int:
        return len(self.blocks3) + 1

    def get_layer_id(self, name: str) -> int:
        """Layer id for layer-wise lr decay: stem/conv stages 0, transformer block i -> i + 1, rest last."""
        if name.startswith(("pos_embed", "patch_embed", "blocks1", "blocks2")):
            return 0
        if name.startswith("blocks3."):
            return int(name.split(".")[1]) + 1
        return self.num_layers

    def forward_features(self, x: torch.Tensor) -> dict:
        """-> dict(pooled (B, C3) after fc_norm, stage1/stage2/stage3 channels-first maps)."""
        self.check_input(x)
        stage1, stage2, x = self.forward_stages(x, self.layout())
        x = self.forward_blocks3(x)
        stage3 = x.reshape(x.shape[0], *self.grid_size, x.shape[-1])
        # 'max' lets a small object decide the clip (procedural demo); 'avg' is the official head
        pooled = x.mean(dim=1) if self.global_pool == "avg" else x.amax(dim=1)
        return dict(pooled=self.fc_norm(pooled), stage1=channels_first(stage1),
                    stage2=channels_first(stage2), stage3=channels_first(stage3))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)["pooled"])


# -- 2D models (official ConvMAE layout) ------------------------------------------------------------
STRIDES_2D = ((4, 4), (2, 2), (2, 2))


def kernel_tuple(size, dims: int) -> tuple:
    """An int kernel size -> the same size in every dimension."""
    return (size,) * dims if isinstance(size, int) else tuple(size)


class ConvMAE(ConvMAEBase):
    """2D ConvMAE pretraining on images `(B, 3, H, W)`.

    Block-wise masking: random tokens of the 1/16 grid (ratio 0.75), upsampled to 2x2 / 4x4 blocks of
    the stage-2 / stage-1 grids. The target is taken on the normalised image, as in MAE, so a
    `norm_pix_std_floor` is in normalised-input units (one grey level is about 1/(255 * 0.226) ~ 0.017).
    """

    def __init__(self, img_size=224, conv_kernel_size=5, mask_ratio: float = 0.75, mask_type: str = "random",
                 **kwargs):
        super().__init__(to_2tuple(img_size), STRIDES_2D, conv_kernel_size=kernel_tuple(conv_kernel_size, 2),
                         mask_ratio=mask_ratio, mask_type=mask_type, **kwargs)


class ConvViT(ConvViTBase):
    """2D ConvViT classifier on images `(B, 3, H, W)` (global pooling + fc_norm)."""

    def __init__(self, img_size=224, conv_kernel_size=5, **kwargs):
        super().__init__(to_2tuple(img_size), STRIDES_2D, conv_kernel_size=kernel_tuple(conv_kernel_size, 2), **kwargs)


# -- presets -------------------------------------------------------------------------------------
_TIMM_ONLY_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def create_preset(cls, defaults: dict, pretrained: bool = False, **overrides) -> nn.Module:
    """Build `cls` from preset defaults + user overrides (the body of every registered preset)."""
    if pretrained:
        raise ValueError("video_mcmae presets have no downloadable weights; create the model with "
                         "pretrained=False and call video_mcmae.models.load_pretrained(model, path)")
    for key in _TIMM_ONLY_ARGS:
        overrides.pop(key, None)
    device, dtype = overrides.pop("device", None), overrides.pop("dtype", None)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = cls(**{**defaults, **overrides})
    return model.to(dtype) if dtype is not None else model


_TINY = dict(embed_dims=(32, 48, 64), depths=(1, 1, 2), num_heads=2)
_BASE = dict(embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12)


@register_model
def convmae_convvit_tiny_patch16(pretrained=False, **kwargs):
    """Tiny 2D ConvMAE for tests."""
    return create_preset(ConvMAE, dict(**_TINY, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
                         pretrained, **kwargs)


@register_model
def convmae_convvit_base_patch16_dec512d8b(pretrained=False, **kwargs):
    """Official ConvMAE-Base pretraining model (decoder 512 wide, 8 blocks, 16 heads)."""
    return create_preset(ConvMAE, dict(**_BASE, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
                         pretrained, **kwargs)


@register_model
def convvit_tiny_patch16(pretrained=False, **kwargs):
    """Tiny 2D ConvViT classifier for tests."""
    return create_preset(ConvViT, dict(_TINY), pretrained, **kwargs)


@register_model
def convvit_base_patch16(pretrained=False, **kwargs):
    """Official ConvViT-Base classifier (global pooling + fc_norm)."""
    return create_preset(ConvViT, dict(_BASE), pretrained, **kwargs)
