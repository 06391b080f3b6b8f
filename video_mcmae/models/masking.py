"""Mask generators at the stage-3 grid and the multi-scale upsampling of a mask to stages 1-2.

Masks are bool `(B, L3)`, `True` = masked, in `(t, h, w)` token order, with the same number of masked
tokens in every sample: `int(ratio * L)` for random masks, `int(ratio * H3 * W3)` per time step for
tube masks.
"""
import math

import torch

MASK_TYPES = ("random", "tube")


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {ratio}")


def random_masking(batch_size: int, grid: tuple, ratio: float, generator: torch.Generator = None,
                   device=None) -> torch.Tensor:
    """Mask `int(ratio * L)` tokens of each sample uniformly at random (L = prod(grid))."""
    _check_ratio(ratio)
    num_tokens = math.prod(grid)
    noise = torch.rand(batch_size, num_tokens, generator=generator,
                       device=generator.device if generator is not None else device)
    ids_masked = noise.argsort(dim=1)[:, : int(ratio * num_tokens)]
    mask = torch.zeros_like(noise, dtype=torch.bool).scatter_(1, ids_masked, True)
    return mask.to(device) if device is not None else mask


def tube_masking(batch_size: int, grid: tuple, ratio: float, generator: torch.Generator = None,
                 device=None) -> torch.Tensor:
    """One random spatial pattern of `int(ratio * H * W)` tokens per sample, repeated at every time step."""
    if len(grid) != 3:
        raise ValueError(f"tube masking needs a (T, H, W) grid, got {tuple(grid)}; use mask_type='random' for images")
    spatial = random_masking(batch_size, grid[1:], ratio, generator, device)
    return spatial[:, None].expand(-1, grid[0], -1).reshape(batch_size, -1)


def check_mask_settings(mask_type: str, ratio: float, grid: tuple) -> None:
    """Raise a clear error for a mask type or ratio that cannot be drawn on `grid`."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")
    if mask_type == "tube" and len(grid) != 3:
        raise ValueError(f"tube masking needs a (T, H, W) grid, got {tuple(grid)}; use mask_type='random' for images")
    _check_ratio(ratio)


def draw_mask(mask_type: str, batch_size: int, grid: tuple, ratio: float,
              generator: torch.Generator = None, device=None) -> torch.Tensor:
    """Draw a mask of `mask_type` ('random' or 'tube')."""
    check_mask_settings(mask_type, ratio, grid)
    masking = tube_masking if mask_type == "tube" else random_masking
    return masking(batch_size, grid, ratio, generator, device)


def check_mask(mask: torch.Tensor, batch_size: int, grid: tuple) -> None:
    """Raise a clear error unless `mask` is a bool `(B, L3)` mask with the same count in every sample."""
    expected = (batch_size, math.prod(grid))
    if mask.dtype != torch.bool or tuple(mask.shape) != expected:
        raise ValueError(f"mask must be a bool tensor of shape {expected} (True = masked) for the stage-3 grid "
                         f"{tuple(grid)}; got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(dim=1)
    if batch_size and not bool((counts == counts[0]).all()):
        raise ValueError(f"every sample must mask the same number of tokens; got counts {counts.tolist()}")


def upsample_mask(mask: torch.Tensor, grid: tuple, factor: tuple) -> torch.Tensor:
    """(B, prod(grid)) mask -> (B, *(grid * factor)) by nearest-neighbour repetition."""
    mask = mask.reshape(mask.shape[0], *grid)
    for dim, f in enumerate(factor, start=1):
        mask = mask.repeat_interleave(f, dim=dim)
    return mask
