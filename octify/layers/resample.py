"""Resolution changes between the branches, exact at any (odd) size.

Down: 2x2 average pooling in ceil mode, so an odd edge keeps its last row or column
(averaged over the pixels that exist): ``H -> ceil(H / 2)``.
Up: nearest-neighbour x2, cropped to the exact target size, so pixel ``i`` reads low
pixel ``i // 2`` at every size. Down then up is the identity on 2x2-block-constant maps.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor


def downsample(x: Tensor) -> Tensor:
    """Halve the resolution: 2x2 average pooling, ceil mode."""
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def upsample_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Double the resolution by nearest neighbour and crop to ``size`` (H, W)."""
    height, width = int(size[0]), int(size[1])
    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    if up.shape[-2] == height and up.shape[-1] == width:
        return up
    return up[..., :height, :width]

