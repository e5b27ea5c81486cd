"""Input checks shared by the octave layers: a wrong input is a ValueError naming what was expected.

An octave tensor is a pair ``(high, low)`` of 4-d tensors ``N, C, H, W`` with the same
batch size, the low branch at ``ceil(H / 2), ceil(W / 2)``. Layers that know their channel
counts check them too, so that a wrong input is never silently sliced.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import Tensor

OctaveTensor = Tuple[Tensor, Tensor]


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def is_octave(value: Any) -> bool:
    """A pair of tensors ``(high, low)``."""
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, Tensor) for v in value)


def branch_of(value: Any, index: int) -> Any:
    """Branch ``index`` (0 high, 1 low) of an octave value; anything else goes to both branches as it is."""
    return value[index] if is_octave(value) else value


def octave_input(x: Any, where: str, channels: Optional[Tuple[int, int]] = None) -> OctaveTensor:
    """``x`` as ``(high, low)``, checked; ``channels`` is the expected ``(high, low)`` channel count."""
    if not isinstance(x, (tuple, list)) or len(x) != 2 or not all(isinstance(v, Tensor) for v in x):
        raise TypeError(f"{where} expects an octave tensor (high, low), got {describe_value(x)}")
    high, low = x
    if high.ndim != 4 or low.ndim != 4:
        raise ValueError(f"{where} expects 4-d (N, C, H, W) branches, got high {_shape(high)} and low {_shape(low)}")
    expected_low = tuple((s + 1) // 2 for s in high.shape[-2:])
    if high.shape[0] != low.shape[0] or tuple(low.shape[-2:]) != expected_low:
        raise ValueError(f"{where}: low branch {_shape(low)} does not fit high branch {_shape(high)}; it needs "
                         f"batch {high.shape[0]} and size {expected_low} (ceil of half)")
    if channels is not None and (high.shape[1], low.shape[1]) != tuple(channels):
        raise ValueError(f"{where} expects {channels[0]} high and {channels[1]} low channels, got high "
                         f"{_shape(high)} and low {_shape(low)}")
    return high, low


def plain_input(x: Any, where: str, channels: Optional[int] = None) -> Tensor:
    """``x`` as one 4-d tensor, checked; ``channels`` is the expected channel count."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where} expects a single tensor, got {describe_value(x)}")
    if x.ndim != 4:
        raise ValueError(f"{where} expects a 4-d (N, C, H, W) tensor, got {_shape(x)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{where} expects {channels} channels, got {_shape(x)}")
    return x


def describe_value(x: Any) -> str:
    """A tensor's shape, a tuple's or list's shapes, or another value's type name, for error messages."""
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}: " + ", ".join(_shape(v) for v in x)
    return _shape(x)
