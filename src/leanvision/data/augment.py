"""Batch-wise augmentation on the device: random crop with padding, horizontal flip, normalisation.

The crop, its padding and the flip are two gathers on the batch: for output row y and column x of
sample b we compute the source row and column in the unpadded image (reflected, or marked out of
bounds and zeroed for zero padding), so no padded copy is ever made. This matches torchvision's
``RandomCrop(crop, padding=pad, padding_mode=...)`` + ``RandomHorizontalFlip`` per image.
"""

from __future__ import annotations

import torch

from .base import DataSpec


def draw_params(n: int, spec: DataSpec, height: int, width: int, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crop offsets (in the padded image) and flips for ``n`` samples, drawn on the CPU.

    Drawing on the CPU makes the augmentation identical on every device for a given seed.

    Returns:
        oy, ox: int64 (n,), offsets in [0, H + 2·pad − crop] and [0, W + 2·pad − crop].
        flip: bool (n,).
    """
    oy = torch.randint(0, height + 2 * spec.pad - spec.crop + 1, (n,), generator=generator)
    ox = torch.randint(0, width + 2 * spec.pad - spec.crop + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5 if spec.flip else torch.zeros(n, dtype=torch.bool)
    return oy, ox, flip


def _source_index(offset: torch.Tensor, crop: int, pad: int, size: int, reflect: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinate in the unpadded image of each crop coordinate; (B, crop) and an in-bounds mask."""
    pos = offset[:, None] + torch.arange(crop, device=offset.device) - pad  # (B, crop), may be out of range
    inside = (pos >= 0) & (pos < size)
    if reflect:  # torch/numpy "reflect": -1 -> 1, size -> size - 2 (edge pixel not repeated)
        pos = pos.abs()
        pos = torch.where(pos >= size, 2 * (size - 1) - pos, pos)
    return pos.clamp(0, size - 1), inside


def crop_flip(images: torch.Tensor, idx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
              spec: DataSpec) -> torch.Tensor:
    """Gather padded random crops of ``images[idx]``, flipped where ``flip``; still uint8.

    Args:
        images: (N, C, H, W) uint8, the whole dataset on the device.
        idx: (B,) int64 sample indices; oy, ox, flip: (B,) from :func:`draw_params`, on the device.
        spec: recipe (pad, pad_mode, crop).

    Returns:
        (B, C, crop, crop) uint8.
    """
    x = images[idx]  # (B, C, H, W)
    b, c, h, w = x.shape
    crop, pad, reflect = spec.crop, spec.pad, spec.pad_mode == "reflect"
    rows, row_in = _source_index(oy, crop, pad, h, reflect)  # (B, crop)
    cols, col_in = _source_index(ox, crop, pad, w, reflect)  # (B, crop)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    col_in = torch.where(flip[:, None], col_in.flip(1), col_in)
    # Two gathers (rows, then columns) on the batch: faster on CPU than one flat gather.
    x = x.gather(2, rows[:, None, :, None].expand(b, c, crop, w))  # (B, C, crop, W)
    x = x.gather(3, cols[:, None, None, :].expand(b, c, crop, crop))  # (B, C, crop, crop)
    if not reflect and pad:
        x = x * (row_in[:, :, None] & col_in[:, None, :])[:, None].to(x.dtype)  # zero padding
    return x


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 − mean) / std, with mean/std (C,) on the same device."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (-mean / std).view(1, -1, 1, 1)
    return images.float().mul_(scale).add_(shift)
