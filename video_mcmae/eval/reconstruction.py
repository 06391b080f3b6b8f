"""Does a pretraining model draw the moving object inside the cubes it did not see?

Pictures of reconstructions are judged by eye; this scores them. On procedural clips the object's
pixels are known (where a clip differs from its own background, `data.render_backgrounds`). At the
object's pixels inside masked cubes, the squared error of the model's prediction is divided by that
of the background alone: 1 means the object is not drawn at all (or drawn no better than the
background), 0 means it is drawn exactly. The loss over all masked pixels hides this, since the
background fills most of them (docs/demo.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .data import ClipSet, chunks, to_input

# A pixel belongs to an object where some channel differs from the background by more than this
# (in [0, 1] units): far above uint8 rounding; an antialiased edge pixel counts once the object
# covers enough of it.
OBJECT_THRESHOLD = 0.1


@dataclass(frozen=True)
class ObjectScore:
    error_ratio: float  # prediction's squared error / the background's, at object pixels in masked cubes
    object_fraction: float  # object pixels / masked pixels (how much of the loss the object is)


def _channels_first(clips: torch.Tensor) -> torch.Tensor:
    """`(N, T, H, W, 3)` uint8 -> `(N, 3, T, H, W)` float in [0, 1]."""
    return clips.permute(0, 4, 1, 2, 3).float() / 255.0


@torch.no_grad()
def score_objects(model: nn.Module, clips: ClipSet, backgrounds: torch.Tensor, mask: torch.Tensor,
                  batch: int = 16) -> ObjectScore:
    """Score `model` (a pretraining model with a raw-pixel or normalised target) on `clips` with the
    fixed `mask`; `backgrounds` are the same clips without their objects."""
    if backgrounds.shape != clips.clips.shape:
        raise ValueError(f"backgrounds of shape {tuple(backgrounds.shape)} do not match the clips' "
                         f"{tuple(clips.clips.shape)}: render both from the same arguments")
    was_training = model.training
    model.eval()
    model_error = background_error = object_pixels = masked_pixels = 0.0
    for b in chunks(len(clips), batch):
        x = to_input(clips.clips[b])
        _, pred, m = model(x, mask=mask[b])
        original, background = _channels_first(clips.clips[b]), _channels_first(backgrounds[b])
        prediction = model.unpatchify(model.unnormalize_target(x, pred).float())
        masked = model.unpatchify(m[..., None].float().expand(-1, -1, model.patch_dim))[:, :1] > 0.5
        on_object = ((original - background).abs().amax(1, keepdim=True) > OBJECT_THRESHOLD) & masked
        model_error += float(((prediction - original) ** 2).sum(1, keepdim=True)[on_object].sum())
        background_error += float(((background - original) ** 2).sum(1, keepdim=True)[on_object].sum())
        object_pixels += float(on_object.sum())
        masked_pixels += float(masked.sum())
    model.train(was_training)
    return ObjectScore(error_ratio=model_error / background_error if background_error else float("nan"),
                       object_fraction=object_pixels / masked_pixels if masked_pixels else 0.0)


# Read off the pictures of docs/demo.md: bars the model learned to copy scored 0.16 and show as
# blurred bars; large objects at 0.21-0.26 show as a wash of their colour without their shape; at
# 0.5 and above the masked cubes hold the background and a faint tint.
DRAWN_BELOW = 0.2
WASH_BELOW = 0.5


def verdict(error_ratio: float) -> str:
    """What an object error ratio looks like in the pictures."""
    if math.isnan(error_ratio):
        return "no object pixel fell inside a masked cube: nothing to judge"
    if error_ratio < DRAWN_BELOW:
        return "the moving object is drawn inside masked cubes, blurred"
    if error_ratio < WASH_BELOW:
        return "the moving object is not drawn inside masked cubes: they hold a wash of its colour, not its shape"
    return ("the moving object is not drawn inside masked cubes: they hold the background and a tint of its "
            "colour (docs/demo.md)")
