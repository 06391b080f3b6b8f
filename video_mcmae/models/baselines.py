"""Trivial predictors of the masked-autoencoder target: the levels a pretraining loss must beat to
show that the model learned anything from the visible cubes.

All three are scored like the loss (mean squared error per token, averaged over the masked tokens,
or over those a decoder mask keeps) in the model's own target space (`ConvMAEBase.target`, the same
normalisation as the loss):

- `baseline_zero`: predict zero everywhere (with `norm_pix_loss` this is each cube's own mean);
- `baseline_mean`: predict the mean masked target of the batch, the best single constant vector;
- `baseline_nearest`: copy the target of the nearest visible token of the same sample: nearest time
  index first (the same one when it has a visible token, always the case for tube masks), then
  nearest in space (Euclidean on the token grid), ties to the lowest token index.
"""
from functools import lru_cache
from typing import Dict, Optional

import torch

# The baselines' names everywhere (the demo, tools/eval_ssl.py, the docs); logged and returned as
# `log_key(name)`, i.e. baseline_zero, baseline_mean, baseline_nearest.
BASELINES = ("zero", "mean", "nearest")


def log_key(name: str) -> str:
    return f"baseline_{name}"


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    per_token = (pred - target).pow(2).mean(dim=-1)
    return float((per_token * mask).sum() / mask.sum().clamp(min=1))


@lru_cache(maxsize=8)
def _grid_cost(grid: tuple, device: torch.device) -> torch.Tensor:
    """(L, L) cost between token positions whose order is 'nearest time first, then nearest in space':
    |dt| * S + dh^2 + dw^2 with S larger than any spatial squared distance (2D grids: space only)."""
    coords = torch.cartesian_prod(*(torch.arange(n) for n in grid)).reshape(-1, len(grid)).double()
    space = coords[:, -2:]
    cost = (space[:, None] - space[None]).pow(2).sum(-1)
    if len(grid) == 3:
        cost = cost + (coords[:, None, 0] - coords[None, :, 0]).abs() * (grid[1] ** 2 + grid[2] ** 2)
    return cost.float().to(device)  # small integers: exact in float32


def nearest_visible(mask: torch.Tensor, grid: tuple) -> torch.Tensor:
    """(B, L) bool mask (True = masked, the same count per sample) -> (B, L) index of the nearest
    visible token of each token (a visible token is its own nearest)."""
    batch, length = mask.shape
    visible = (~mask).nonzero()[:, 1].reshape(batch, -1)  # ascending per sample: ties go to the lowest index
    cost = _grid_cost(tuple(grid), mask.device)[visible]  # (B, n_visible, L)
    return visible.gather(1, cost.argmin(dim=1))


@torch.no_grad()
def trivial_baselines(target: torch.Tensor, mask: torch.Tensor, grid: tuple,
                      scored: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Target `(B, L, D)` and mask `(B, L)` on the token grid `grid` -> {`log_key(name)`: masked MSE}.
    `scored` `(B, L)`: the masked tokens scored, all of them by default (a decoder mask scores fewer)."""
    target, mask = target.float(), mask.to(target.device)
    weights = (mask if scored is None else scored.to(target.device)).to(target.dtype)
    mean = (target * weights[..., None]).sum(dim=(0, 1)) / weights.sum().clamp(min=1)
    nearest = target.gather(1, nearest_visible(mask, grid)[..., None].expand_as(target))
    return {
        "baseline_zero": _masked_mse(torch.zeros_like(target), target, weights),
        "baseline_mean": _masked_mse(mean.expand_as(target), target, weights),
        "baseline_nearest": _masked_mse(nearest, target, weights),
    }
