"""Labelled procedural clips held in memory for the self-supervised evaluation.

A `ClipSet` keeps uint8 clips `(N, T, H, W, 3)` (a quarter of float32's memory: 4000 clips of
8x64x64 are 393 MB) and normalises a batch when it is drawn, as the training loaders do. Train,
validation and test clips come from disjoint seeds (`synthetic.video_rng`'s split index), so no
clip is in two splits. The classes' exact symmetries (a left-right mirror and a reversal of time
map every class to a known one, `synthetic.classes`) are the labelled-data augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Tuple

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from video_mcmae.synthetic import hflip_class, time_reverse_class, video_rng
from video_mcmae.synthetic.scenes import SceneParams, SceneStyle, render_background, render_scene, sample_scene

_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1)


def to_input(clips: torch.Tensor) -> torch.Tensor:
    """uint8 `(N, T, H, W, 3)` -> ImageNet-normalised float `(N, 3, T, H, W)` (the models' default)."""
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255)
    return ((x - _MEAN) / _STD).contiguous()


def chunks(n: int, size: int) -> Iterator[slice]:
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


@dataclass
class ClipSet:
    """Clips, their labels and the class names behind the labels."""

    clips: torch.Tensor  # uint8 (N, T, H, W, 3)
    labels: torch.Tensor  # int64 (N,)
    class_names: Tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ClipSet":
        return ClipSet(self.clips[index], self.labels[index], self.class_names)

    def label_map(self, relation) -> torch.Tensor:
        return torch.tensor([self.class_names.index(relation(name)) for name in self.class_names])

    def batch(self, size: int, generator: torch.Generator, augment: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """`size` clips drawn with replacement, normalised; with `augment` each is mirrored
        left-right and/or reversed in time (each with probability 1/2) and relabelled by the
        class's symmetry."""
        index = torch.randint(len(self), (size,), generator=generator)
        x, y = to_input(self.clips[index]), self.labels[index]
        if augment:
            flip = torch.rand(size, generator=generator) < 0.5
            reverse = torch.rand(size, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)
            x = torch.where(reverse.view(-1, 1, 1, 1, 1), x.flip(2), x)
            y = torch.where(flip, self.label_map(hflip_class)[y], y)
            y = torch.where(reverse, self.label_map(time_reverse_class)[y], y)
        return x, y


def _scenes(class_names: Sequence[str], split: str, per_class: int, frames: int, size: int, style: SceneStyle,
            seed: int, first: int) -> Iterator[Tuple[int, SceneParams]]:
    for index in range(first, first + per_class):
        for label, name in enumerate(class_names):
            yield label, sample_scene(name, video_rng(seed, split, label, index), frames, size, size, style)


def render_clips(class_names: Sequence[str], split: str, per_class: int, frames: int, size: int, style: SceneStyle,
                 seed: int = 0, first: int = 0) -> ClipSet:
    """`per_class` scenes of every class, interleaved by class; clip (label, i) depends on its own
    seed (seed, split, label, first + i) only."""
    clips, labels = [], []
    for label, scene in _scenes(class_names, split, per_class, frames, size, style, seed, first):
        clips.append(render_scene(scene))
        labels.append(label)
    return ClipSet(torch.from_numpy(np.stack(clips)), torch.tensor(labels), tuple(class_names))


def render_backgrounds(class_names: Sequence[str], split: str, per_class: int, frames: int, size: int,
                       style: SceneStyle, seed: int = 0, first: int = 0) -> torch.Tensor:
    """The clips `render_clips` gives for the same arguments without their objects: `(N, T, H, W, 3)`
    uint8, in the same order."""
    return torch.from_numpy(np.stack([render_background(scene) for _, scene in
                                      _scenes(class_names, split, per_class, frames, size, style, seed, first)]))


@torch.no_grad()
def predict_clips(model: nn.Module, clips: ClipSet, batch: int = 64) -> torch.Tensor:
    """The classifier's predicted class of every clip."""
    model.eval()
    return torch.cat([model(to_input(clips.clips[b])).argmax(-1) for b in chunks(len(clips), batch)])
