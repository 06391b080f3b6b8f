"""Mask generators at the stage-3 grid and the multi-scale upsampling of a mask to stages 1-2; the
decoder masks (VideoMAE V2's dual masking) drawn among the masked positions.

Masks are bool `(B, L3)`, `True` = masked, in `(t, h, w)` token order, with the same number of masked
tokens in every sample: `int(ratio * L)` for random masks, `int(ratio * H3 * W3)` per time step for
tube masks.
"""
import math
from typing import Optional

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


# -- decoder masks ------------------------------------------------------------------------------------
# A decoder mask is bool `(B, L3)`, `True` = an encoder-masked position the decoder drops: it is
# neither reconstructed nor scored. It is drawn among the encoder-masked positions only, so the
# decoder always sees every visible token; every sample keeps the same number of masked positions,
# round((1 - ratio) * masked) with halves rounded up, so the decoder's batch stays rectangular.
DECODER_MASK_TYPES = ("running_cell", "random")
RUNNING_CELL = (2, 2)  # VideoMAE V2's cell: 2 x 2 positions of a frame


def check_decoder_mask_settings(mask_type: str, ratio: float) -> None:
    """Raise a clear error for a decoder mask type or ratio that cannot be drawn."""
    if mask_type not in DECODER_MASK_TYPES:
        raise ValueError(f"unknown decoder_mask_type {mask_type!r}; choose one of {DECODER_MASK_TYPES}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"decoder_mask_ratio must be in [0, 1) (0 = decode every masked cube), got {ratio}")


def _kept(masked: torch.Tensor, ratio: float) -> torch.Tensor:
    """round((1 - ratio) * masked), halves up, for counts `masked` (any shape)."""
    return torch.floor((1.0 - ratio) * masked.double() + 0.5).long()


def _noise(shape: tuple, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """Uniform [0, 1) noise drawn on the generator's device (the same numbers wherever the mask lives)."""
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else device,
                      dtype=torch.float64).to(device)


def _drop_all_but_lowest(score: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Along the last dim, keep the `keep` (broadcast) masked positions of lowest `score`; -> the
    dropped ones (masked and not kept)."""
    order = score.masked_fill(~mask, math.inf).argsort(-1).argsort(-1)  # visible positions rank last
    return mask & (order >= keep.unsqueeze(-1))


def random_decoder_masking(mask: torch.Tensor, ratio: float, generator: torch.Generator = None) -> torch.Tensor:
    """Keep round((1 - ratio) * masked) of each sample's masked positions, uniformly at random."""
    keep = _kept(mask[:1].sum(1), ratio)
    return _drop_all_but_lowest(_noise(mask.shape, generator, mask.device), mask, keep)


def running_cell_rank(offset: torch.Tensor, grid: tuple) -> torch.Tensor:
    """(B,) cell offsets -> (B, T, H, W) running-cell ranks (`grid` (T, H, W); a 2D grid is one frame).

    Each frame is tiled by `RUNNING_CELL` cells; a position's rank in its cell at time t is
    (offset - index in the cell - t) mod cell size, so the ranks of a position cycle through every
    value over `cell size` consecutive frames and every whole cell of a frame has each rank once. Keeping
    the positions of rank < k keeps k of every cell (VideoMAE V2's running cell with k kept per cell).
    """
    frames, height, width = (1, *grid) if len(grid) == 2 else grid
    ch, cw = RUNNING_CELL
    device = offset.device
    index = (torch.arange(height, device=device) % ch)[:, None] * cw + torch.arange(width, device=device) % cw
    t = torch.arange(frames, device=device)
    return (offset.view(-1, 1, 1, 1) - index - t.view(1, -1, 1, 1)) % (ch * cw)


def running_cell_decoder_masking(mask: torch.Tensor, grid: tuple, ratio: float,
                                 generator: torch.Generator = None) -> torch.Tensor:
    """VideoMAE V2's running-cell decoder mask, restricted to the encoder-masked positions.

    Every frame keeps its share of its own masked positions: the quotas are the differences of
    round((1 - ratio) * masked positions up to frame t), so each frame keeps its exact share rounded
    down or up and the sample keeps round((1 - ratio) * masked) in all. Within a frame the masked
    positions are taken by running-cell rank (`running_cell_rank`, one random offset per sample),
    ties in random order. Without encoder masking, on an even grid and at a ratio that is a multiple
    of 1/4, that is exactly VideoMAE V2's pattern; with tube masks every masked position is kept at
    least once in every `cell size` consecutive frames when each frame's quota is at least its
    number of cells (all its rank-0 positions fit: 88 >= 49 on 14 x 14 at tube 0.9, ratio 0.5).
    """
    batch = mask.shape[0]
    cells = RUNNING_CELL[0] * RUNNING_CELL[1]
    offset = torch.randint(cells, (batch,), generator=generator,
                           device=generator.device if generator is not None else mask.device).to(mask.device)
    rank = running_cell_rank(offset, grid).flatten(2)  # (B, T, H*W)
    frames = mask.view(rank.shape)
    total = _kept(frames.sum(-1).cumsum(1), ratio)
    quota = torch.diff(total, dim=1, prepend=torch.zeros_like(total[:, :1]))
    score = rank + _noise(rank.shape, generator, mask.device)  # rank first, random order within a rank
    return _drop_all_but_lowest(score, frames, quota).view(batch, -1)


def draw_decoder_mask(mask_type: str, mask: torch.Tensor, grid: tuple, ratio: float,
                      generator: torch.Generator = None) -> torch.Tensor:
    """Draw a decoder mask of `mask_type` ('running_cell' or 'random') among the masked positions of
    `mask` (bool `(B, prod(grid))`, the same count per sample)."""
    check_decoder_mask_settings(mask_type, ratio)
    masked = int(mask[:1].sum()) if mask.shape[0] else 0
    if mask.shape[0] and int(_kept(torch.tensor(masked), ratio)) == 0:
        raise ValueError(f"decoder_mask_ratio {ratio} keeps none of the {masked} masked positions per sample; "
                         "lower it (or raise mask_ratio)")
    if mask_type == "random":
        return random_decoder_masking(mask, ratio, generator)
    return running_cell_decoder_masking(mask, grid, ratio, generator)


def check_decoder_mask(decoder_mask: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise a clear error unless `decoder_mask` is a bool mask of `mask`'s shape that drops only
    masked positions and keeps the same number of them in every sample."""
    if decoder_mask.dtype != torch.bool or decoder_mask.shape != mask.shape:
        raise ValueError(f"decoder_mask must be a bool tensor of shape {tuple(mask.shape)} (True = a masked "
                         f"position the decoder drops); got {decoder_mask.dtype} {tuple(decoder_mask.shape)}")
    decoder_mask = decoder_mask.to(mask.device)
    if bool((decoder_mask & ~mask).any()):
        raise ValueError("decoder_mask may drop only masked positions (True in mask): the decoder sees every "
                         "visible token")
    kept = (mask & ~decoder_mask).sum(dim=1)
    if mask.shape[0] and not bool((kept == kept[0]).all()):
        raise ValueError(f"decoder_mask must keep the same number of masked positions in every sample; "
                         f"got {kept.tolist()}")


def scored(mask: torch.Tensor, decoder_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The positions the loss scores: the masked ones the decoder keeps."""
    return mask if decoder_mask is None else mask & ~decoder_mask
