"""Pooling and resizing of octave tensors, each branch on its own, at any input size.

The high branch always goes through exactly the original operation. The low branch must
end at the octave convention's size for the high output, ``half_size`` (``ceil(h / 2)``
per dimension); the rules that get it there:

* **Pooling** (:class:`OctPool2d`): pool the low branch with the same kernel, stride,
  padding and dilation in *ceil* mode, then crop its bottom rows and right columns to
  ``half_size`` of the high output. Floor mode would fall one pixel short whenever
  ``H mod 4 = 2`` (2x2 / stride 2: a 6-pixel high branch pools to 3, whose low branch
  needs 2; the 3-pixel low branch pools to 1 in floor mode, to 2 in ceil mode). Where
  even ceil mode falls short (3x3 / 2 without padding in ceil mode at odd low sizes,
  unpadded stride-1 pools on a one-pixel low branch), the low branch is first extended
  at its bottom rows and right columns by repeating its edge pixels, as many strides as
  it lacks outputs, so every geometry runs at every size.
* **Resizing** (:class:`OctInterpolate`, nearest neighbour): resize the low branch by the
  same scale factor as the high branch, then crop to ``half_size`` of the high output. For
  a whole-number scale factor this is exact: resizing a merged tensor equals merging the
  resized branches. A target size that is not a whole multiple of the input (a UNet's
  skip connection at some sizes) has no such factor; the low branch is then resized
  straight to its size, which keeps the sizes right but is not exact.
* **Global max pooling** (:class:`OctGlobalMaxPool`): the per-channel maximum of each
  branch, exact at any size (the up-sampled low branch holds no other values).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .branchwise import OctGlobalPool
from .channels import half_size
from .checks import OctaveTensor, octave_input
from .octconv import _pair

Pool = Union[nn.MaxPool2d, nn.AvgPool2d]
NEAREST_MODES = ("nearest", "nearest-exact")


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dimension."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_size_problem(pool: Pool) -> Optional[str]:
    """Why :class:`OctPool2d` cannot run ``pool`` per branch (None if it can, at every input size)."""
    if getattr(pool, "return_indices", False):
        return "pooling that returns indices has no octave rule (the indices would refer to two maps)"
    if getattr(pool, "divisor_override", None):
        return "average pooling with a divisor override has no octave rule"
    return None


def is_whole_enlargement(scale_factor: Union[float, Sequence[float]]) -> bool:
    """True for whole-number scale factors of at least 1 (one, or one per dimension)."""
    factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
    return all(float(factor).is_integer() and factor >= 1 for factor in factors)


def _crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """Keep the first ``size`` rows and columns."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return x[..., :size[0], :size[1]]


class OctPool2d(nn.Module):
    """Max or average pooling of an octave tensor: ``pool`` on the high branch, the module
    docstring's rule (ceil mode, edge pixels repeated where it falls short, then a crop to
    ``half_size``) on the low branch."""

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        if type(pool) not in (nn.MaxPool2d, nn.AvgPool2d):
            raise ValueError(f"OctPool2d takes nn.MaxPool2d or nn.AvgPool2d, got {type(pool).__name__}")
        problem = pool_size_problem(pool)
        if problem:
            raise ValueError(problem)
        self.pool = pool
        self.low_pool = copy.copy(pool)
        self.low_pool.ceil_mode = True

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, f"OctPool2d({type(self.pool).__name__})")
        high = self.pool(high)
        target = half_size(high.shape[-2:])
        return high, _crop(self.low_pool(self._extended(low, target)), target)

    def _extended(self, low: Tensor, target: Sequence[int]) -> Tensor:
        """``low`` with edge pixels repeated at the bottom and right where ceil-mode pooling would fall short."""
        geometry = zip(_pair(self.pool.kernel_size), _pair(self.pool.stride or self.pool.kernel_size),
                       _pair(self.pool.padding), _pair(getattr(self.pool, "dilation", 1)))
        pads = []
        for size, wanted, (kernel, stride, padding, dilation) in zip(low.shape[-2:], target, geometry):
            short = max(dilation * (kernel - 1) + 1 - 2 * padding - size, 0)  # pixels missing for one window
            got = pool_output_size(size + short, kernel, stride, padding, dilation, True)
            pads.append(short + stride * max(wanted - got, 0))
        if not any(pads):
            return low
        return F.pad(low, (0, pads[1], 0, pads[0]), mode="replicate")


class OctInterpolate(nn.Module):
    """Nearest-neighbour resizing of an octave tensor, like ``F.interpolate(x, size, scale_factor, mode)``.

    The high branch is resized exactly as ``F.interpolate`` would; the low branch by the
    module docstring's rule. ``size`` can also be given at call time (a skip connection's size).
    """

    def __init__(self, size: Optional[Sequence[int]] = None, scale_factor: Union[float, Sequence[float], None] = None,
                 mode: str = "nearest") -> None:
        super().__init__()
        if mode not in NEAREST_MODES:
            raise ValueError(f"OctInterpolate resizes with mode 'nearest' or 'nearest-exact', got {mode!r}")
        if size is not None and scale_factor is not None:
            raise ValueError("OctInterpolate takes size or scale_factor, not both")
        if scale_factor is not None and not is_whole_enlargement(scale_factor):
            raise ValueError(f"OctInterpolate needs whole-number scale factors (2, 4, ...), got {scale_factor!r}: "
                             "other factors can leave the low branch short of half the high size")
        self.size = None if size is None else _pair(size)
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, x: OctaveTensor, size: Optional[Sequence[int]] = None) -> OctaveTensor:
        high, low = octave_input(x, "OctInterpolate")
        size = self.size if size is None else _pair(size)
        resized = F.interpolate(high, size=size, scale_factor=None if size else self.scale_factor, mode=self.mode)
        target = half_size(resized.shape[-2:])
        factors = self.scale_factor if size is None else tuple(o / int(i) for o, i in zip(size, high.shape[-2:]))
        if not is_whole_enlargement(factors):
            return resized, F.interpolate(low, size=target, mode=self.mode)
        return resized, _crop(F.interpolate(low, scale_factor=factors, mode=self.mode), target)

    def extra_repr(self) -> str:
        if self.size is not None:
            return f"size={self.size}, mode={self.mode!r}"
        if self.scale_factor is not None:
            return f"scale_factor={self.scale_factor}, mode={self.mode!r}"
        return f"size given at each call, mode={self.mode!r}"


class OctGlobalMaxPool(OctGlobalPool):
    """Global max pooling of an octave tensor to a plain ``[N, C, 1, 1]`` (or ``[N, C]``).

    Equal to pooling the merged tensor at any size; channels come back in their original order.
    """

    def pool(self, high: Tensor, low: Tensor) -> Tuple[Tensor, Tensor]:
        return high.amax((2, 3), keepdim=self.keepdim), low.amax((2, 3), keepdim=self.keepdim)