"""Adds that write into their first operand when it is a temporary nobody else reads.

The graph pass in :mod:`octify.inference.optimize` calls these only where the first operand
is a convolution's output with no other use, so writing into it is invisible; the ``_relu``
variants replace such an add followed by a ReLU (:mod:`octify.inference.fusion`). They fall
back to a new tensor when the sum would not fit the operand (broadcasting, dtype promotion).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .. import ops
from ..layers.checks import OctaveTensor
from .epilogue import add_, residual_fits



def add_into(a: Tensor, b: Any) -> Tensor:
    """``a + b``, computed in ``a``'s memory when the sum has ``a``'s shape and dtype."""
    return a.add_(b) if _fits(a, b) else a + b


def octave_add_into(a: OctaveTensor, b: Any) -> OctaveTensor:
    """``octify.ops.add(a, b)``, computed in ``a``'s memory branch by branch when it fits."""
    if _fits_branchwise(a, b):
        return a[0].add_(b[0]), a[1].add_(b[1])
    return ops.add(a, b)


def add_relu_into(a: Tensor, b: Any) -> Tensor:
    """``relu(a + b)``, in ``a``'s memory and one pass when the sum has ``a``'s shape and dtype."""
    if residual_fits(a, b):
        return add_(a, b, relu=True)
    return (a + b).relu_()


def octave_add_relu_into(a: OctaveTensor, b: Any) -> OctaveTensor:
    """``relu(octify.ops.add(a, b))`` branch by branch, in ``a``'s memory when it fits."""
    if _fits_branchwise(a, b):
        return add_(a[0], b[0], relu=True), add_(a[1], b[1], relu=True)
    high, low = ops.add(a, b)
    return high.relu_(), low.relu_()


def _fits(a: Tensor, b: Any) -> bool:
    if isinstance(b, Tensor):
        return residual_fits(a, b)
    return isinstance(b, (int, float)) and not isinstance(b, bool) and a.is_floating_point()


def _fits_branchwise(a: OctaveTensor, b: Any) -> bool:
    return isinstance(b, tuple) and len(b) == 2 and _fits(a[0], b[0]) and _fits(a[1], b[1])
