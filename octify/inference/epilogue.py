"""What a fast convolution layer does to its fresh output before returning it.

:func:`octify.inference.for_inference` moves a residual add that follows a convolution, and
a ReLU after it, into the convolution's layer (a second ``forward`` argument and a
``relu`` flag): the layer adds the residual into its own output and applies the ReLU in
the same pass as its last add, so neither needs a pass over memory of its own.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import Tensor

from .. import ops
from ..layers.checks import OctaveTensor



FUSED_ADD_RELU_DTYPES = (torch.float32, torch.float64)


def accumulate_(target: Tensor, others: Sequence[Tensor], relu: bool) -> Tensor:
    """``target += sum(others)`` then ReLU if asked, in place; the last add carries the ReLU."""
    for other in others[:-1]:
        target.add_(other)
    if others:
        return add_(target, others[-1], relu)
    return target.relu_() if relu else target


def add_(target: Tensor, other: Tensor, relu: bool = False) -> Tensor:
    """``target += other``, then ReLU (in the same pass on CPU in float32) when asked; returns ``target``."""
    if not relu:
        return target.add_(other)
    if target.device.type == "cpu" and target.dtype in FUSED_ADD_RELU_DTYPES:
        return torch.ops.aten._add_relu_(target, other)  # one fused kernel, CPU only, no half types
    return target.add_(other).relu_()


def add_then_relu(output: Union[Tensor, OctaveTensor], residual: Any, relu: bool) -> Union[Tensor, OctaveTensor]:
    """``output + residual`` out of place (any broadcasting), then ReLU if asked: the general case."""
    if isinstance(output, Tensor):
        total = output + residual
        return total.relu_() if relu else total
    high, low = ops.add(output, residual)
    return (high.relu_(), low.relu_()) if relu else (high, low)


def residual_fits(output: Union[Tensor, OctaveTensor], residual: Any) -> bool:
    """Whether ``residual`` can be added into ``output`` branch by branch without changing its shape."""
    if isinstance(output, Tensor):
        return isinstance(residual, Tensor) and _same(output, residual)
    return (isinstance(residual, tuple) and len(residual) == 2 and all(isinstance(r, Tensor) for r in residual)
            and _same(output[0], residual[0]) and _same(output[1], residual[1]))


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
