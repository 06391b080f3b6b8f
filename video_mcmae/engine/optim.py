"""Parameter groups (layer-wise lr decay, no weight decay where it does not belong) and AdamW.

Each group carries `lr_scale` and `wd_scale`; `schedule.Schedules.apply` multiplies the
scheduled lr / weight decay by them every step. DeepSpeed gets the resulting `torch.optim.AdamW`
(ZeRO wraps it), so no DeepSpeed op has to be compiled.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from video_mcmae.config import Config, ConfigError


def _no_decay(name: str, param: nn.Parameter, skip: set) -> bool:
    # 1-D tensors are norms and biases; position tables and tokens are named by the model.
    return param.ndim <= 1 or name.endswith(".bias") or name in skip or name.rsplit(".", 1)[-1] in skip


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> List[Dict]:
    """Trainable parameters grouped by (layer id, decay or not).

    With `layer_decay` < 1 the model must give `get_layer_id(name)` and `num_layers` (ids
    0..num_layers); a parameter with id i gets lr scale `layer_decay ** (num_layers - i)`.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    use_layers = layer_decay < 1.0
    if use_layers and not (hasattr(model, "get_layer_id") and hasattr(model, "num_layers")):
        raise ConfigError(
            f"optim.layer_decay={layer_decay} needs a model with get_layer_id()/num_layers; "
            f"{type(model).__name__} has none, so set optim.layer_decay=1.0"
        )
    groups: Dict[str, Dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = model.get_layer_id(name) if use_layers else 0
        decay = not _no_decay(name, p, skip)
        key = f"layer{layer}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "group_name": key,
                "lr_scale": layer_decay ** (model.num_layers - layer) if use_layers else 1.0,
                "wd_scale": 1.0 if decay else 0.0,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(p)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups`; lr/wd are placeholders until the schedule sets them."""
    o = cfg.optim
    groups = param_groups(model, o.weight_decay, o.layer_decay)
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=o.lr or o.base_lr, betas=tuple(o.betas), eps=o.eps, **extra)
