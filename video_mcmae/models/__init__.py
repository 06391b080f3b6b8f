"""Models: ConvMAE (2D) and VideoConvMAE (3D) pretraining models and classifiers.

Importing this package registers every preset with timm, so `timm.create_model(name, **overrides)`
works for the names in `PRESETS`; `build_model(cfg.model)` builds one from a run config,
`from_weights(path)` one with trained weights.
"""
from video_mcmae.presets import CLASSIFIER_PRESETS, PRESETS, PRETRAINING_PRESETS

from .convmae import ConvMAE, ConvMAEBase, ConvViT, ConvViTBase
from .factory import LinearProbeHead, build_model, from_weights, is_pretraining
from .masking import draw_mask, random_masking, tube_masking, upsample_mask
from .pretrained import LoadReport, load_pretrained
from .video_convmae import VideoConvMAE, VideoConvViT

__all__ = ["ConvMAE", "ConvMAEBase", "ConvViT", "ConvViTBase", "VideoConvMAE", "VideoConvViT", "PRESETS",
           "PRETRAINING_PRESETS", "CLASSIFIER_PRESETS", "build_model", "from_weights", "is_pretraining", "LinearProbeHead",
           "LoadReport", "load_pretrained", "draw_mask", "random_masking", "tube_masking", "upsample_mask"]
