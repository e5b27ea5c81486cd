"""Nearest-neighbour up-sampling fused with the add it feeds, in place and without a copy.

``add_upsampled_(high, low)`` equals ``high += upsample_to(low, high.shape[-2:])``, and with
``relu=True`` also applies a ReLU in the same pass: each low pixel is broadcast over its
2x2 block of ``high`` through a strided view, so the up-sampled map is never materialised.
Odd sizes add the last row / column separately (the crop of the reference).
"""
from __future__ import annotations

from torch import Tensor

from .epilogue import add_


def add_upsampled_(high: Tensor, low: Tensor, relu: bool = False) -> Tensor:
    """Add nearest x2 up-sampled ``low``, cropped to ``high``'s size, into ``high``; return ``high``."""
    height, width = high.shape[-2:]
    rows, cols = height // 2, width // 2  # whole 2x2 blocks
    if not (height % 2 or width % 2):  # the common case, with as few view operations as possible
        batch, channels = high.shape[:2]
        add_(high.view(batch, channels, rows, 2, cols, 2), low.view(batch, channels, rows, 1, cols, 1), relu)
        return high
    _blocks(high[..., :2 * rows, :2 * cols], rows, cols).add_(low[..., :rows, None, :cols, None])
    if height % 2:
        high[..., 2 * rows, :2 * cols].unflatten(-1, (cols, 2)).add_(low[..., rows, :cols, None])
    if width % 2:
        high[..., :2 * rows, 2 * cols].unflatten(-1, (rows, 2)).add_(low[..., :rows, cols, None])
    if height % 2 and width % 2:
        high[..., 2 * rows, 2 * cols].add_(low[..., rows, cols])
    return high.relu_() if relu else high


def _blocks(x: Tensor, rows: int, cols: int) -> Tensor:
    """View ``[..., 2 * rows, 2 * cols]`` as ``[..., rows, 2, cols, 2]`` (any strides)."""
    return x.unflatten(-1, (cols, 2)).unflatten(-3, (rows, 2))
