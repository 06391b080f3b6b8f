"""Frozen features of a classifier's encoder at a chosen layer.

Layers: `stage2` (the last convolution stage, a `(T', H/8, W/8)` grid), `block<k>` (the tokens after
transformer block k of stage 3, k from 0) and `stage3` (after the last block). Tokens keep where
and when: `(N, L, C)` in the grid's (t, h, w) order, the position table included from the
transformer stage on. `pooled` is the classifier's own pooled feature (mean of the stage-3 tokens,
then `fc_norm`).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .data import ClipSet, chunks, to_input


def layer_names(model: nn.Module) -> List[str]:
    """The layers `tokens` reads, shallow to deep."""
    return ["stage2", *[f"block{k}" for k in range(len(model.blocks3) - 1)], "stage3"]


def _tokens(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    _, stage2, tokens = model.forward_stages(x, model.layout())
    if layer == "stage2":
        return stage2.flatten(1, -2)
    last = len(model.blocks3) - 1 if layer == "stage3" else int(layer[len("block"):])
    for blk in model.blocks3[:last + 1]:
        tokens = blk(tokens)
    return tokens


@torch.no_grad()
def tokens(model: nn.Module, clips: ClipSet, layer: str, batch: int = 64) -> torch.Tensor:
    """Frozen tokens `(N, L, C)` of every clip at `layer` (see the module docstring)."""
    if layer not in layer_names(model):
        raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(layer_names(model))}")
    model.eval()
    return torch.cat([_tokens(model, to_input(clips.clips[b]), layer) for b in chunks(len(clips), batch)])


@torch.no_grad()
def pooled(model: nn.Module, clips: ClipSet, batch: int = 64) -> torch.Tensor:
    """The classifier's pooled features `(N, C)` (what its head reads)."""
    model.eval()
    return torch.cat([model.forward_features(to_input(clips.clips[b]))["pooled"] for b in chunks(len(clips), batch)])
