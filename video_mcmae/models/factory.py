"""Models from configs: `build_model`, `is_pretraining` (preset names or models) and the linear-probe head.
The preset names live in `video_mcmae.presets`."""
from typing import Any, Dict, Optional, Union

import timm
import torch
from torch import nn

from video_mcmae.config import ConfigError, DataConfig, ModelConfig
from video_mcmae.presets import PRESETS, is_pretraining_preset

from .convmae import ConvMAEBase


def is_pretraining(name_or_model: Union[str, nn.Module]) -> bool:
    """Whether a preset name or a model is a masked-autoencoder pretraining model (else a classifier)."""
    if isinstance(name_or_model, nn.Module):
        return isinstance(getattr(name_or_model, "_orig_mod", name_or_model), ConvMAEBase)  # also torch.compile'd
    return is_pretraining_preset(name_or_model)


def build_model(m: ModelConfig, linprobe: bool = False, data: Optional[DataConfig] = None) -> nn.Module:
    """The preset `m.name` with the config's geometry, regularisation and depthwise-conv backend;
    `linprobe` puts a `LinearProbeHead` on a classifier. `data`: the run's data section, whose
    `mean`/`std` a video pretraining model undoes to build its targets (default: ImageNet's)."""
    if m.name not in PRESETS:
        raise ConfigError(f"model.name: unknown preset {m.name!r}; choose one of {', '.join(PRESETS)}")
    kwargs: Dict[str, Any] = {"img_size": m.img_size, "dwconv_backend": m.use_kernel}
    if m.name.startswith("video"):
        kwargs.update(num_frames=m.num_frames, tubelet_size=m.tubelet_size)
    if is_pretraining(m.name):  # config.validate has refused drop path / dropout for these
        kwargs.update(mask_ratio=m.mask_ratio, mask_type=m.mask_type, norm_pix_loss=m.norm_pix_loss, sparse=m.sparse)
        kwargs.update(decoder_mask_ratio=m.decoder_mask_ratio, decoder_mask_type=m.decoder_mask_type)
        if data is not None and m.name.startswith("video"):
            kwargs.update(data_mean=tuple(data.mean), data_std=tuple(data.std))
    else:
        kwargs.update(num_classes=m.num_classes, drop_path_rate=m.drop_path_rate, head_drop_rate=m.drop_rate)
    try:
        model = timm.create_model(m.name, **{**kwargs, **m.kwargs})
    except TypeError as e:
        raise ConfigError(f"model.kwargs: {m.name} rejects the given arguments ({e})") from None
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if linprobe:
        if is_pretraining(model):
            raise ConfigError(f"a linear probe needs a classifier; {m.name} is a pretraining preset")
        model.head = LinearProbeHead(model.head)
    return model


class LinearProbeHead(nn.Module):
    """MAE's linear probe: BatchNorm1d without affine parameters in front of the linear head.
    The norm runs in fp32: DeepSpeed's half-precision module has no half BatchNorm on every device."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.norm = nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6)
        self.fc = head

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.norm.float()  # keep the statistics in fp32 when the engine casts the module
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.float()).to(self.fc.weight.dtype))
