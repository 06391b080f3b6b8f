"""VideoConvMAE: the ConvMAE encoder on clips `(B, 3, T, H, W)`.

Stage 1 embeds 2x4x4 cubes, stages 2 and 3 merge 1x2x2, so a 16x224x224 clip becomes an 8x14x14
grid of 1568 stage-3 tokens. Depthwise convs are 3D (3x5x5 by default); the position table is a
separable spatio-temporal sin-cos table; pretraining uses tube masks (ratio 0.9) and predicts
2x16x16x3 cubes with per-cube, per-channel normalised targets.
"""
from typing import Sequence

import torch
from einops import rearrange
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import to_2tuple
from timm.models import register_model

from .convmae import ConvMAEBase, ConvViTBase, create_preset, kernel_tuple

__all__ = ["VideoConvMAE", "VideoConvViT"]


def _video_geometry(num_frames: int, img_size, tubelet_size: int, conv_kernel_size) -> dict:
    return dict(input_size=(num_frames, *to_2tuple(img_size)),
                strides=((tubelet_size, 4, 4), (1, 2, 2), (1, 2, 2)),
                conv_kernel_size=kernel_tuple(conv_kernel_size, 3))


class VideoConvMAE(ConvMAEBase):
    """Video masked-autoencoder pretraining; `msd=True` adds the multi-scale decoder fusion.

    `data_mean` / `data_std`: the per-channel normalisation of the input clips (config `data.mean` /
    `data.std`, passed by `build_model`); the target is taken on the clip with it undone, so a
    `norm_pix_std_floor` is in pixel intensities in [0, 1] (2/255 ~ 0.008 is two grey levels).
    """

    def __init__(self, num_frames: int = 16, img_size=224, tubelet_size: int = 2, conv_kernel_size=(3, 5, 5),
                 decoder_embed_dim: int = 384, decoder_depth: int = 4, decoder_num_heads: int = 6,
                 mask_ratio: float = 0.9, mask_type: str = "tube", msd: bool = False,
                 data_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, data_std: Sequence[float] = IMAGENET_DEFAULT_STD,
                 **kwargs):
        super().__init__(**_video_geometry(num_frames, img_size, tubelet_size, conv_kernel_size),
                         decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth,
                         decoder_num_heads=decoder_num_heads, mask_ratio=mask_ratio, mask_type=mask_type,
                         msd=msd, **kwargs)
        self.tubelet_size = tubelet_size
        self.data_mean, self.data_std = tuple(map(float, data_mean)), tuple(map(float, data_std))
        if len(self.data_mean) != self.in_chans or len(self.data_std) != self.in_chans or min(self.data_std) <= 0:
            raise ValueError(f"data_mean/data_std (config data.mean/data.std) need {self.in_chans} values each, "
                             f"the stds positive; got {list(self.data_mean)} / {list(self.data_std)}")

    def target_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The clip with its data normalisation undone (x * data_std + data_mean: pixel intensities in
        [0, 1]) as cubes `(B, L3, pt*ph*pw, C)`: `norm_pix_loss` standardises each cube and channel."""
        x = x * x.new_tensor(self.data_std).view(1, -1, 1, 1, 1) + x.new_tensor(self.data_mean).view(1, -1, 1, 1, 1)
        pt, ph, pw = self.patch_size_nd
        return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw) c", pt=pt, ph=ph, pw=pw)

    def _patch_std(self, var: torch.Tensor) -> torch.Tensor:
        """The official per-cube std: unbiased std + 1e-6 (VideoMAE)."""
        return var.sqrt() + 1e-6


class VideoConvViT(ConvViTBase):
    """Video classifier: the unmasked encoder, mean pooling, fc_norm, dropout and a linear head."""

    def __init__(self, num_frames: int = 16, img_size=224, tubelet_size: int = 2, conv_kernel_size=(3, 5, 5),
                 **kwargs):
        super().__init__(**_video_geometry(num_frames, img_size, tubelet_size, conv_kernel_size), **kwargs)
        self.tubelet_size = tubelet_size


_SIZES = {
    "tiny": dict(embed_dims=(32, 48, 64), depths=(1, 1, 2), num_heads=2),
    "small": dict(embed_dims=(128, 256, 384), depths=(2, 2, 11), num_heads=6),
    "base": dict(embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12),
    "large": dict(embed_dims=(384, 768, 1024), depths=(2, 2, 23), num_heads=16),
}
_DECODERS = {
    "tiny": dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
    "small": dict(decoder_embed_dim=192, decoder_depth=4, decoder_num_heads=3),
    "base": dict(decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6),
    "large": dict(decoder_embed_dim=512, decoder_depth=4, decoder_num_heads=8),
}


@register_model
def videoconvmae_tiny_patch16(pretrained=False, **kwargs):
    """Tiny VideoConvMAE for tests (dims 32/48/64, depths 1/1/2, decoder 32 wide, 1 block)."""
    return create_preset(VideoConvMAE, {**_SIZES["tiny"], **_DECODERS["tiny"]}, pretrained, **kwargs)


@register_model
def videoconvmae_small_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvMAE, {**_SIZES["small"], **_DECODERS["small"]}, pretrained, **kwargs)


@register_model
def videoconvmae_base_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvMAE, {**_SIZES["base"], **_DECODERS["base"]}, pretrained, **kwargs)


@register_model
def videoconvmae_large_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvMAE, {**_SIZES["large"], **_DECODERS["large"]}, pretrained, **kwargs)


@register_model
def videoconvmae_tiny_msd_patch16(pretrained=False, **kwargs):
    """Tiny VideoConvMAE with multi-scale decoder fusion, for tests."""
    return create_preset(VideoConvMAE, {**_SIZES["tiny"], **_DECODERS["tiny"], "msd": True}, pretrained, **kwargs)


@register_model
def videoconvmae_base_msd_patch16(pretrained=False, **kwargs):
    """VideoConvMAE-Base with stage-1/2 outputs fused into the visible stage-3 tokens."""
    return create_preset(VideoConvMAE, {**_SIZES["base"], **_DECODERS["base"], "msd": True}, pretrained, **kwargs)


@register_model
def videoconvvit_tiny_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvViT, dict(_SIZES["tiny"], num_classes=400), pretrained, **kwargs)


@register_model
def videoconvvit_small_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvViT, dict(_SIZES["small"], num_classes=400), pretrained, **kwargs)


@register_model
def videoconvvit_base_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvViT, dict(_SIZES["base"], num_classes=400), pretrained, **kwargs)


@register_model
def videoconvvit_large_patch16(pretrained=False, **kwargs):
    return create_preset(VideoConvViT, dict(_SIZES["large"], num_classes=400), pretrained, **kwargs)
