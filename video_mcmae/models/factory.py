"""Models from configs and from weights: `build_model`, `from_weights`, `is_pretraining` (preset names
or models) and the linear-probe head. The preset names live in `video_mcmae.presets`."""
import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
from torch import nn

from video_mcmae.config import DataConfig, ModelConfig, recorded_model_config
from video_mcmae.errors import CheckpointError, ConfigError
from video_mcmae.presets import PRESETS, is_pretraining_preset
from video_mcmae.weights import Weights, read_weights

from .convmae import ConvMAEBase
from .pretrained import LoadReport, load_pretrained


def is_pretraining(name_or_model: Union[str, nn.Module]) -> bool:
    """Whether a preset name or a model is a masked-autoencoder pretraining model (else a classifier)."""
    if isinstance(name_or_model, nn.Module):
        return isinstance(getattr(name_or_model, "_orig_mod", name_or_model), ConvMAEBase)  # also torch.compile'd
    return is_pretraining_preset(name_or_model)


# The preset arguments `build_model` takes from the config, and the config key of each.
PRESET_ARGS = {"img_size": "model.img_size", "dwconv_backend": "model.dwconv_backend",
               "num_frames": "model.num_frames", "tubelet_size": "model.tubelet_size",
               "mask_ratio": "model.mask_ratio", "mask_type": "model.mask_type",
               "norm_pix_loss": "model.norm_pix_loss", "visible_only": "model.visible_only",
               "data_mean": "data.mean", "data_std": "data.std", "num_classes": "model.num_classes",
               "drop_path_rate": "model.drop_path_rate", "head_drop_rate": "model.drop_rate"}


def _refuse_shadowing_kwargs(m: ModelConfig) -> None:
    """One setting, one route: `model.kwargs` may not set what a config key sets."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"kwargs"}
    for name in m.kwargs:
        key = PRESET_ARGS.get(name) or (f"model.{name}" if name in fields else None)
        if key is not None:
            raise ConfigError(f"model.kwargs: {name} is set by the config key {key}; set it there "
                              f"(--opt {key}=...) and remove it from model.kwargs")


def build_model(m: ModelConfig, linprobe: bool = False, data: Optional[DataConfig] = None) -> nn.Module:
    """The preset `m.name` with the config's geometry, regularisation and depthwise-conv backend;
    `linprobe` puts a `LinearProbeHead` on a classifier. `data`: the run's data section, whose
    `mean`/`std` a video pretraining model undoes to build its targets (default: ImageNet's).
    `m.kwargs` passes other preset arguments; it may not set what a config key sets."""
    if m.name not in PRESETS:
        raise ConfigError(f"model.name: unknown preset {m.name!r}; choose one of {', '.join(PRESETS)}")
    _refuse_shadowing_kwargs(m)
    kwargs: Dict[str, Any] = {"img_size": m.img_size, "dwconv_backend": m.dwconv_backend}
    if m.name.startswith("video"):
        kwargs.update(num_frames=m.num_frames, tubelet_size=m.tubelet_size)
    if is_pretraining(m.name):  # config.validate has refused drop path / dropout for these
        kwargs.update(mask_ratio=m.mask_ratio, mask_type=m.mask_type, norm_pix_loss=m.norm_pix_loss,
                      visible_only=m.visible_only)
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


def from_weights(weights: Union[str, Weights], model: Optional[ModelConfig] = None, *, strict: bool = True,
                 data: Optional[DataConfig] = None) -> Tuple[nn.Module, LoadReport]:
    """The one way to build a model from weights (`api.load`, the multi-view test, the tests).

    weights: a path (anything `video_mcmae.weights.read_weights` reads) or what it returned.
    model: the model to build; by default the one the weights record (an export or a checkpoint
        records its run's model section; a bare state dict records none). The head is the
        linear-probe head when the weights record a linear probe.
    strict: True: the weights hold every weight of the model and nothing else (the fixed sin-cos
        position tables are the model's own). False: what fits is loaded (`load_pretrained`: the
        pretraining-only weights dropped, learnable position tables resized), the rest stays new
        (pretraining weights into a classifier: the head).
    data: the data section whose mean/std a video pretraining model undoes for its targets; by
        default the recorded one.
    Returns the model (on the CPU, in train mode) and what was loaded. Weights that do not fit
    the model raise a `CheckpointError` naming them, the model and the keys or shapes.
    """
    if not isinstance(weights, Weights):
        weights = read_weights(weights)
    where = weights.path or "the weights"
    if model is None:
        if not weights.config.get("model"):
            raise CheckpointError(f"{where} record no model; pass the model config (preset and geometry) "
                                  "they were trained with")
        model = recorded_model_config(weights.config["model"])
    if data is None and weights.config.get("data"):
        names = {f.name for f in dataclasses.fields(DataConfig)}
        data = DataConfig(**{k: v for k, v in weights.config["data"].items() if k in names})
    net = build_model(model, linprobe=weights.linprobe, data=data)
    if not strict:
        try:
            return net, load_pretrained(net, weights.state_dict)
        except ValueError as e:
            raise CheckpointError(f"{where} does not fit {model.name}: {e}") from None
    return net, _load_exactly(net, weights.state_dict, where, model.name)


def _load_exactly(model: nn.Module, state: Dict[str, torch.Tensor], where: str, name: str) -> LoadReport:
    """All of the model's weights from `state` (fixed sin-cos tables are the model's own)."""
    fixed = {k for k, p in model.named_parameters() if not p.requires_grad}
    loaded = {k: v for k, v in state.items() if k not in fixed}
    try:
        missing, unexpected = model.load_state_dict(loaded, strict=False)
    except RuntimeError as e:
        shapes = "; ".join(line.strip() for line in str(e).splitlines() if "size mismatch" in line)
        raise CheckpointError(f"{where} does not fit {name}: {shapes or e}") from None
    missing = [k for k in missing if k not in fixed]
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit {name} (missing {missing[:4]}, unexpected {unexpected[:4]})")
    return LoadReport(loaded_keys=sorted(loaded), rebuilt_keys=sorted(fixed))


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
