"""Models: ConvMAE (2D) and VideoConvMAE (3D) pretraining models and classifiers.

Importing this package registers every preset with timm, so `timm.create_model(name, **overrides)`
works for the names in `PRESETS`.
"""
from .convmae import ConvMAE, ConvMAEBase, ConvViT, ConvViTBase
from .masking import draw_mask, random_masking, tube_masking, upsample_mask
from .pretrained import LoadReport, load_pretrained
from .video_convmae import VideoConvMAE, VideoConvViT

PRESETS = (
    "videoconvmae_tiny_patch16", "videoconvmae_small_patch16", "videoconvmae_base_patch16",
    "videoconvmae_large_patch16", "videoconvmae_tiny_msd_patch16", "videoconvmae_base_msd_patch16",
    "videoconvvit_tiny_patch16", "videoconvvit_small_patch16", "videoconvvit_base_patch16",
    "videoconvvit_large_patch16", "convmae_convvit_tiny_patch16", "convmae_convvit_base_patch16_dec512d8b",
    "convvit_tiny_patch16", "convvit_base_patch16",
)

__all__ = ["ConvMAE", "ConvMAEBase", "ConvViT", "ConvViTBase", "VideoConvMAE", "VideoConvViT", "PRESETS",
           "LoadReport", "load_pretrained", "draw_mask", "random_masking", "tube_masking", "upsample_mask"]
