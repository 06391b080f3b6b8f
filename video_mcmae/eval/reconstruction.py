"""Does a pretraining model draw the moving object inside the cubes it did not see?

Pictures of reconstructions are judged by eye; this scores them. On procedural clips the object's
pixels are known (where a clip differs from its own background, `data.render_backgrounds`). At the
object's pixels inside masked cubes, the squared error of the model's prediction is divided by that
of the background alone: 1 means the object is not drawn at all (or drawn no better than the
background), 0 means it is drawn exactly. The loss over all masked pixels hides this, since the
background fills most of them (docs/demo.md).

That ratio also falls when a large object fills whole cubes and its colour alone is right. The
shape ratio asks for the shape: over the masked cubes that hold both object and background pixels
(where the object's edge runs), the prediction's squared error divided by that of each cube's own
mean colour. That flat colour is the best any prediction without structure inside the cube can
do, and it even knows how much of the cube the object covers; below 1, the prediction places the
edge better than that.
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
    shape_ratio: float  # prediction's squared error / each cube's own mean colour's, in masked cubes with an edge
    edge_cubes: int  # how many masked cubes hold both object and background pixels


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
    model_error = background_error = object_pixels = masked_pixels = edge_error = flat_error = 0.0
    edge_cubes = 0
    for b in chunks(len(clips), batch):
        x = to_input(clips.clips[b])
        _, pred, m = model(x, mask=mask[b])
        original, background = _channels_first(clips.clips[b]), _channels_first(backgrounds[b])
        predicted = model.unnormalize_target(x, pred).float()  # the cubes, laid out as `patchify` lays them
        prediction = model.unpatchify(predicted)
        masked = model.unpatchify(m[..., None].float().expand(-1, -1, model.patch_dim))[:, :1] > 0.5
        on_object = ((original - background).abs().amax(1, keepdim=True) > OBJECT_THRESHOLD) & masked
        model_error += float(((prediction - original) ** 2).sum(1, keepdim=True)[on_object].sum())
        background_error += float(((background - original) ** 2).sum(1, keepdim=True)[on_object].sum())
        object_pixels += float(on_object.sum())
        masked_pixels += float(masked.sum())
        truth = model.patchify(original).unflatten(-1, (-1, 3))  # (B, L, pixels, 3)
        covered = model.patchify(on_object.expand(-1, 3, -1, -1, -1).float()).unflatten(-1, (-1, 3))[..., 0] > 0.5
        edge = m.bool() & covered.any(2) & (~covered).any(2)
        edge_error += float(((predicted.unflatten(-1, (-1, 3)) - truth) ** 2)[edge].sum())
        flat_error += float(((truth - truth.mean(2, keepdim=True)) ** 2)[edge].sum())
        edge_cubes += int(edge.sum())
    model.train(was_training)
    return ObjectScore(error_ratio=model_error / background_error if background_error else float("nan"),
                       object_fraction=object_pixels / masked_pixels if masked_pixels else 0.0,
                       shape_ratio=edge_error / flat_error if flat_error else float("nan"), edge_cubes=edge_cubes)


# A prediction with no structure inside a cube scores at least 1 on the shape ratio, so below 1 the
# edge is there. The colour ratio then tells a wash from a tint, read off the pictures of
# docs/demo.md: large objects at 0.21-0.26 show as a wash of their colour, at 0.5 and above the
# masked cubes hold the background and a faint tint.
SHAPE_BELOW = 1.0
WASH_BELOW = 0.5


def verdict(score: ObjectScore) -> str:
    """What an object score looks like in the pictures."""
    if math.isnan(score.error_ratio) or math.isnan(score.shape_ratio):
        return "no object edge fell inside a masked cube: nothing to judge"
    if score.shape_ratio < SHAPE_BELOW:
        return ("the moving object is drawn inside masked cubes: its edge is placed better than each cube's "
                "flat colour")
    if score.error_ratio < WASH_BELOW:
        return "the moving object is not drawn inside masked cubes: they hold a wash of its colour, not its shape"
    return ("the moving object is not drawn inside masked cubes: they hold the background and a tint of its "
            "colour (docs/demo.md)")
