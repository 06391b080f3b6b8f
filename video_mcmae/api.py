"""A small Python API: load a trained model, extract features, predict classes of a video.

    from video_mcmae import api

    model = api.load("output/demo/weights/finetuned.safetensors", dataset="ssv2", class_names="classes.txt")
    model.predict("video.webm", k=3)      # [Prediction(label=1, name='moving_right', prob=0.97), ...]
    feats = model.features("video.webm")  # {'pooled': (C3,), 'stage1'/'stage2'/'stage3': (C, T, H, W)}

Weights are anything `video_mcmae.weights.read_weights` reads: exported weights
(`tools/export_weights.py`: `.safetensors` + `.json`), a DeepSpeed checkpoint (a tag folder such as
`out/epoch-0005`, or a run's output dir), or a plain state dict (`.pth` / `.safetensors`) together
with `preset=`. A video is read with the dataset kind's validation sampling
(`data.sampling.DATASET_SAMPLING`: segment centres for SSv2, the centre dense clip for Kinetics)
and the validation transform (short side resize, centre crop, normalisation), exactly
as the validation loader sees it. Still images are repeated over the clip's frames.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from video_mcmae.config import DataConfig, ModelConfig, recorded_config, recorded_model_config
from video_mcmae.data.device import to_model_input
from video_mcmae.data.lists import read_class_names
from video_mcmae.data.readers import open_video
from video_mcmae.data.sampling import DATASET_SAMPLING, sample_indices
from video_mcmae.data.transforms import EvalTransform
from video_mcmae.errors import ApiError, CheckpointError
from video_mcmae.models import PRESETS, build_model, from_weights, is_pretraining
from video_mcmae.weights import Weights, read_weights

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Prediction:
    label: int
    name: Optional[str]
    prob: float


def read_frames(path: str, num_frames: int, settings: DataConfig) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of a video (validation sampling) or an image repeated T times."""
    if not os.path.isfile(path):
        raise ApiError(f"input not found: {path!r}; give a video or image file")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        with Image.open(path) as im:
            frame = np.asarray(im.convert("RGB"))
        return np.repeat(frame[None], num_frames, axis=0)
    if settings.dataset not in DATASET_SAMPLING:
        raise ApiError(f"dataset={settings.dataset!r} has no video sampling; use one of {', '.join(DATASET_SAMPLING)}")
    with open_video(path, settings.reader) as reader:
        idx = sample_indices(DATASET_SAMPLING[settings.dataset], "val", reader.num_frames, num_frames,
                             settings.sampling_rate)[0]
        return reader.get_frames(idx)


def input_geometry(model: nn.Module):
    """(num_frames or None for 2D models, square side) the model was built for."""
    size = tuple(model.input_size)
    if size[-1] != size[-2]:
        raise ApiError(f"model input {size} is not square; the validation crop is square")
    return (size[0] if len(size) == 3 else None), size[-1]


def prepare_clip(frames: np.ndarray, model: nn.Module, settings: DataConfig) -> torch.Tensor:
    """uint8 (1, 3, T, H, W) for video models or (1, 3, H, W) for image models: the validation
    transform (short side resize, centre crop); `LoadedModel.clip` normalises on the device."""
    num_frames, side = input_geometry(model)
    clip = EvalTransform(side, settings.short_side_size, num_crops=1)(frames)
    if num_frames is None:
        return clip[:, clip.shape[1] // 2][None]
    return clip[None]


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class LoadedModel:
    """A model in eval mode with everything needed to feed it a video file."""

    model: nn.Module
    settings: DataConfig  # the validation path's fields: dataset, sampling_rate, short_side_size, mean, std, reader
    preset: str
    class_names: Optional[List[str]] = None
    trained_head: bool = True  # False when the head was not in the weights (features only)
    meta: Dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clip(self, path: str) -> torch.Tensor:
        """The normalised input batch of one file, on the model's device."""
        num_frames, _ = input_geometry(self.model)
        frames = read_frames(path, num_frames or 1, self.settings)
        return to_model_input(prepare_clip(frames, self.model, self.settings), self.device,
                              self.settings.mean, self.settings.std)

    def _classifier(self) -> nn.Module:
        if is_pretraining(self.model):
            raise ApiError(f"{self.preset} is a pretraining model; load it with preset=<a classifier such as "
                           f"{self.preset.replace('convmae', 'convvit')}> to get features, or finetune it to predict")
        return self.model

    @torch.no_grad()
    def features(self, path: str) -> Dict[str, torch.Tensor]:
        """{'pooled': (C3,), 'stage1': (C1, *grid1), 'stage2': ..., 'stage3': ...} of one file (CPU)."""
        out = self._classifier().forward_features(self.clip(path))
        return {k: v[0].float().cpu() for k, v in out.items()}

    @torch.no_grad()
    def probabilities(self, path: str) -> torch.Tensor:
        """Softmax over the classes, (num_classes,) on the CPU."""
        model = self._classifier()
        if not self.trained_head:
            raise ApiError("these weights hold no trained classifier head (pretraining weights); "
                           "finetune them first (tools/run_finetune.py) or use features()")
        return model(self.clip(path))[0].float().softmax(-1).cpu()

    def predict(self, path: str, k: int = 5) -> List[Prediction]:
        """The k most likely classes of one file, most likely first."""
        probs = self.probabilities(path)
        top = probs.topk(min(k, probs.numel()))
        names = self.class_names
        return [Prediction(int(i), names[int(i)] if names else None, float(p))
                for p, i in zip(top.values, top.indices)]


def _data_config(recorded: Dict[str, Any], side: int, overrides: Dict[str, Any]) -> DataConfig:
    """The run's recorded data section (if any) with the keyword overrides; the short side
    defaults to the crop side."""
    names = {f.name for f in dataclasses.fields(DataConfig)}
    data = {k: v for k, v in recorded.items() if k in names}
    if data.get("dataset") == "image":  # an image run records no video sampling: videos get the default
        del data["dataset"]
    data.setdefault("short_side_size", side)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if data.get("dataset", DataConfig.dataset) not in DATASET_SAMPLING:
        raise ApiError(f"dataset={data['dataset']!r}: choose 'k400' (dense sampling) or 'ssv2' (segment sampling)")
    return DataConfig(**data)


def _read(weights: str) -> Weights:
    try:
        return read_weights(weights)
    except FileNotFoundError as e:
        raise ApiError(f"{e}; a state dict file also needs preset=") from None


def _meta(weights: Weights) -> Dict[str, Any]:
    """What the weights recorded: the run config, and an export's .json."""
    if weights.form == "state_dict":
        return {}
    return {"config": weights.config, **({"export": weights.meta} if weights.form == "export" else {})}


def load(weights: Optional[str] = None, *, preset: Optional[str] = None, class_names: Union[str, Sequence[str], None] = None,
         dataset: Optional[str] = None, sampling_rate: Optional[int] = None, short_side_size: Optional[int] = None,
         device: str = "cpu", reader: str = "pyav", **model_kwargs) -> LoadedModel:
    """Load weights into a model ready for `features` / `predict`.

    weights: exported `.safetensors` (with its `.json`), a DeepSpeed checkpoint folder or run dir,
        or a plain state dict file (then `preset` is required). None gives a randomly initialised `preset`.
    preset: the registry name; by default the one the weights were trained as. Naming a
        classifier for pretraining weights loads the encoder into it (features only).
    class_names: a file with one name per line, or the names.
    dataset / sampling_rate / short_side_size: how videos are sampled; by default the run's data
        config recorded in checkpoints and exports (older exports lack it), else 'k400' with rate 4.
    model_kwargs: geometry for state-dict files without a config (num_frames, img_size, num_classes, ...).
    """
    read = _read(weights) if weights is not None else Weights({}, "state_dict")  # None: random init
    state, config, saved_preset = read.state_dict, read.config, read.preset
    preset = preset or saved_preset
    if preset is None:
        raise ApiError(f"{weights!r} does not say which model it holds; pass preset=, e.g. "
                       "preset='videoconvvit_tiny_patch16', num_frames=..., img_size=..., num_classes=...")
    if preset not in PRESETS:
        raise ApiError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(recorded_config({"model": config.get("model") or {}})["model"])
    fields["name"] = preset
    model_fields = {f for f in ModelConfig.__dataclass_fields__}
    extra = {k: v for k, v in model_kwargs.items() if k not in model_fields}
    fields.update({k: v for k, v in model_kwargs.items() if k in model_fields})
    fields["kwargs"] = {**fields.get("kwargs", {}), **extra}
    if "num_classes" not in model_kwargs and not config and "head.weight" in state:
        fields["num_classes"] = state["head.weight"].shape[0]  # a bare state dict: its head says it
    fields.update(drop_path_rate=0.0, drop_rate=0.0)  # inference only
    model_cfg = recorded_model_config(fields)
    settings = _data_config(config.get("data") or {}, model_cfg.img_size,
                            dict(dataset=dataset, sampling_rate=sampling_rate, short_side_size=short_side_size,
                                 reader=reader))
    # a pretraining model's targets undo settings.mean/std
    if not state:
        model, trained_head = build_model(model_cfg, data=settings), True
    else:
        try:  # exactly the model they were trained as; pretraining weights into a classifier leave its head new
            model, report = from_weights(read, model_cfg, strict=preset == saved_preset or saved_preset is None,
                                         data=settings)
        except CheckpointError as e:
            raise ApiError(f"{e}; pass the preset and geometry (num_frames, img_size, num_classes) it was "
                           "trained with") from None
        trained_head = not any(k.startswith("head.") for k in report.missing_keys)
    model.to(_device(device)).eval()
    if isinstance(class_names, str):
        class_names = read_class_names(class_names, getattr(model, "num_classes", None))
    elif class_names is not None:
        class_names = list(class_names)
        if len(class_names) != getattr(model, "num_classes", len(class_names)):
            raise ApiError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    return LoadedModel(model, settings, preset, class_names, trained_head, _meta(read))
