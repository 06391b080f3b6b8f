"""Loading pretraining checkpoints (or exported weights) into a classifier.

`load_pretrained(model, state_dict_or_path)` unwraps `{'model': ...}` / `{'module': ...}` checkpoints,
drops the pretraining-only weights (decoder, mask token, MSD projections, the encoder's final norm),
adapts learnable position tables to the model's grid, refuses other shape differences with an error
naming the key and both shapes, and returns (and logs) a `LoadReport`.
"""
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from video_mcmae.weights import read_weights, unwrap_state_dict

from .embed import resize_pos_table

logger = logging.getLogger(__name__)

# weights that only the pretraining model uses; dropped when the target model has no such key
PRETRAIN_ONLY_PREFIXES = ("decoder_", "mask_token", "stage1_output_decode.", "stage2_output_decode.", "norm.")


@dataclass
class LoadReport:
    """What `load_pretrained` did. Keys are state-dict names of the model."""

    loaded_keys: list = field(default_factory=list)
    missing_keys: list = field(default_factory=list)      # in the model, not in the checkpoint
    unexpected_keys: list = field(default_factory=list)   # in the checkpoint, not used by the model
    dropped_keys: list = field(default_factory=list)      # pretraining-only weights (decoder, ...)
    resized_keys: dict = field(default_factory=dict)      # key -> (checkpoint shape, model shape)
    rebuilt_keys: list = field(default_factory=list)      # fixed sin-cos tables: the model's own, not loaded
    checkpoint_grid: tuple = None                          # stage-3 grid assumed for resized tables

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded_keys)} tensors"]
        for title, keys in (("missing", self.missing_keys), ("unexpected", self.unexpected_keys),
                            ("dropped (pretraining only)", self.dropped_keys),
                            ("fixed tables rebuilt", self.rebuilt_keys)):
            if keys:
                lines.append(f"{title}: {', '.join(keys)}")
        for key, (src, dst) in self.resized_keys.items():
            lines.append(f"resized {key}: {tuple(src)} -> {tuple(dst)} (checkpoint grid {self.checkpoint_grid})")
        return "\n".join(lines)


def read_state_dict(source) -> dict:
    """A state dict from a dict (unwrapping `{'model': ...}` / `{'module': ...}` and a DDP `module.`
    prefix) or from any path `video_mcmae.weights.read_weights` reads (files, checkpoint folders)."""
    if isinstance(source, (str, Path)):
        return read_weights(str(source)).state_dict
    return unwrap_state_dict(source)


def infer_grid(num_tokens: int, model_grid: tuple) -> tuple:
    """Guess the grid of a checkpoint's `num_tokens`-token table: the model's spatial aspect ratio, and
    among those grids the one whose frames-to-height ratio is closest to the model's."""
    *time, height, width = model_grid
    candidates = []
    for h in range(1, num_tokens + 1):
        w, rem = divmod(h * width, height)
        if rem or w == 0 or num_tokens % (h * w):
            continue
        t = num_tokens // (h * w)
        if time or t == 1:
            candidates.append((t, h, w) if time else (h, w))
    if not candidates:
        raise ValueError(f"cannot infer the grid of a {num_tokens}-token position table for the model grid "
                         f"{tuple(model_grid)}; pass checkpoint_grid=(T, H, W) or (H, W) of its stage-3 grid")
    if not time:
        return candidates[0]
    target = math.log(time[0] / height)
    return min(candidates, key=lambda g: abs(math.log(g[0] / g[1]) - target))


def load_pretrained(model: nn.Module, state_dict_or_path, checkpoint_grid: tuple = None,
                    drop_prefixes: tuple = ()) -> LoadReport:
    """Load pretrained weights into `model` (typically a classifier) and return a `LoadReport`.

    checkpoint_grid: the stage-3 grid the checkpoint's position table was built for, e.g. (8, 14, 14);
        inferred by `infer_grid` when omitted (the report says which grid was assumed).
    drop_prefixes: extra checkpoint key prefixes to ignore (e.g. ('head.',) for another label set).
    """
    source = read_state_dict(state_dict_or_path)
    target = model.state_dict()
    pos_tables = model.pos_tables() if hasattr(model, "pos_tables") else {}
    params = dict(model.named_parameters())
    fixed = sorted(k for k in pos_tables if not params[k].requires_grad)
    report = LoadReport(rebuilt_keys=fixed)
    state, mismatched = {}, []
    for key, value in source.items():
        if key not in target:
            if key.startswith(PRETRAIN_ONLY_PREFIXES + tuple(drop_prefixes)):
                report.dropped_keys.append(key)
            else:
                report.unexpected_keys.append(key)
            continue
        if key.startswith(tuple(drop_prefixes)):
            report.dropped_keys.append(key)
            continue
        if key in fixed:
            continue
        if value.shape != target[key].shape:
            if key in pos_tables and value.shape[-1] == target[key].shape[-1]:
                src_grid = tuple(checkpoint_grid) if checkpoint_grid else infer_grid(value.shape[1], pos_tables[key])
                value = resize_pos_table(value, src_grid, pos_tables[key])
                report.checkpoint_grid = src_grid
                report.resized_keys[key] = (tuple(source[key].shape), tuple(value.shape))
            else:
                mismatched.append(f"'{key}': checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
                continue
        state[key] = value
    if mismatched:
        raise ValueError("pretrained weights do not fit the model (different architecture or width?): "
                         + "; ".join(mismatched)
                         + ". Create the matching preset, or drop these keys with drop_prefixes")
    if not state:
        raise ValueError("no tensor of the pretrained weights matches the model's parameter names")
    result = model.load_state_dict(state, strict=False)
    report.loaded_keys = sorted(state)
    report.missing_keys = [k for k in result.missing_keys if k not in fixed]
    logger.info("load_pretrained: %s", report)
    return report
