"""Functions on octave tensors ``(high, low)`` that converted graphs call.

They appear by name in a converted module's code (``print(module.code)``), so each does
one obvious thing, and their arguments are plain values (functions go by qualified name),
so the code can be printed, saved and loaded. Plain tensors and numbers apply to both branches.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Callable, Sequence, Tuple, Union

import torch
from torch import Tensor

OctaveTensor = Tuple[Tensor, Tensor]


def _is_octave(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, Tensor) for v in value)


def _branch(value: Any, index: int) -> Any:
    return value[index] if _is_octave(value) else value


@lru_cache(maxsize=None)
def _function(qualified_name: str) -> Callable[..., Any]:
    module_name, _, attribute = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def branchwise(function: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """The function named ``function`` (e.g. ``"torch.nn.functional.relu"``) applied to each branch."""
    fn = _function(function)
    return tuple(fn(x[i], *(_branch(a, i) for a in args), **kwargs) for i in (0, 1))


def branchwise_method(name: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """Tensor method ``name`` called on each branch, e.g. ``branchwise_method("relu", x)``."""
    return tuple(getattr(x[i], name)(*(_branch(a, i) for a in args), **kwargs) for i in (0, 1))


def add(a: Any, b: Any) -> OctaveTensor:
    """``a + b`` branch by branch."""
    return _branch(a, 0) + _branch(b, 0), _branch(a, 1) + _branch(b, 1)


def sub(a: Any, b: Any) -> OctaveTensor:
    """``a - b`` branch by branch."""
    return _branch(a, 0) - _branch(b, 0), _branch(a, 1) - _branch(b, 1)


def mul(a: Any, b: Any) -> OctaveTensor:
    """``a * b`` branch by branch."""
    return _branch(a, 0) * _branch(b, 0), _branch(a, 1) * _branch(b, 1)


def div(a: Any, b: Any) -> OctaveTensor:
    """``a / b`` branch by branch."""
    return _branch(a, 0) / _branch(b, 0), _branch(a, 1) / _branch(b, 1)


def cat(parts: Sequence[Union[OctaveTensor, Tensor]], dim: int = 1) -> OctaveTensor:
    """Channel concat: highs together, lows together; a plain part joins the high branch whole."""
    highs = [p[0] if _is_octave(p) else p for p in parts]
    lows = [p[1] for p in parts if _is_octave(p)]
    return torch.cat(highs, dim), torch.cat(lows, dim)


def size(x: OctaveTensor, dim: Union[int, None] = None) -> Union[torch.Size, int]:
    """The size the merged (plain) tensor would have."""
    high, low = x
    merged = torch.Size((high.shape[0], high.shape[1] + low.shape[1]) + tuple(high.shape[2:]))
    return merged if dim is None else merged[dim]


OCTAVE_FUNCTIONS = (branchwise, branchwise_method, add, sub, mul, div, cat, size)
