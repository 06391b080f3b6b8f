"""The model preset names and which of them pretrain. Torch-free, so that `config` can check a
preset name without importing the models (which import `config`)."""

PRETRAINING_PRESETS = (
    "videoconvmae_tiny_patch16", "videoconvmae_small_patch16", "videoconvmae_base_patch16",
    "videoconvmae_large_patch16", "videoconvmae_tiny_msd_patch16", "videoconvmae_base_msd_patch16",
    "convmae_convvit_tiny_patch16", "convmae_convvit_base_patch16_dec512d8b",
)
CLASSIFIER_PRESETS = (
    "videoconvvit_tiny_patch16", "videoconvvit_small_patch16", "videoconvvit_base_patch16",
    "videoconvvit_large_patch16", "convvit_tiny_patch16", "convvit_base_patch16",
)
PRESETS = PRETRAINING_PRESETS + CLASSIFIER_PRESETS


def is_pretraining_preset(name: str) -> bool:
    """Whether the preset `name` is a masked-autoencoder pretraining model (else a classifier);
    ValueError listing the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name in PRETRAINING_PRESETS
