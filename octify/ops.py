"""Functions on octave tensors ``(high, low)`` that converted graphs call.

They appear by name in a converted module's code (``print(module.code)``), so each does
one obvious thing, and their arguments are plain values (functions go by qualified name),
so the code can be printed, saved and loaded. Plain tensors and numbers apply to both branches.
"""
from __future__ import annotations

import functools
import importlib
from functools import lru_cache
from typing import Any, Callable, Sequence, Tuple, Union

import torch
from torch import Tensor, fx

OctaveTensor = Tuple[Tensor, Tensor]


def graph_leaf(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` one node in any torch.fx trace (re-tracing a converted module, loading a saved one)."""
    @functools.wraps(fn)
    def leaf(*args: Any, **kwargs: Any) -> Any:
        proxies: list = []
        fx.node.map_aggregate((args, kwargs), lambda v: proxies.append(v) if isinstance(v, fx.Proxy) else None)
        if proxies:
            return proxies[0].tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)
    return leaf


def _is_octave(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, Tensor) for v in value)


def _branch(value: Any, index: int) -> Any:
    return value[index] if _is_octave(value) else value


@lru_cache(maxsize=None)
def _function(qualified_name: str) -> Callable[..., Any]:
    module_name, _, attribute = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


@graph_leaf
def branchwise(function: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """The function named ``function`` (e.g. ``"torch.nn.functional.relu"``) applied to each branch."""
    fn = _function(function)
    return tuple(fn(x[i], *(_branch(a, i) for a in args), **kwargs) for i in (0, 1))


@graph_leaf
def branchwise_method(name: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """Tensor method ``name`` called on each branch, e.g. ``branchwise_method("relu", x)``."""
    return tuple(getattr(x[i], name)(*(_branch(a, i) for a in args), **kwargs) for i in (0, 1))


@graph_leaf
def add(a: Any, b: Any) -> OctaveTensor:
    """``a + b`` branch by branch."""
    return _branch(a, 0) + _branch(b, 0), _branch(a, 1) + _branch(b, 1)


@graph_leaf
def sub(a: Any, b: Any) -> OctaveTensor:
    """``a - b`` branch by branch."""
    return _branch(a, 0) - _branch(b, 0), _branch(a, 1) - _branch(b, 1)


@graph_leaf
def mul(a: Any, b: Any) -> OctaveTensor:
    """``a * b`` branch by branch."""
    return _branch(a, 0) * _branch(b, 0), _branch(a, 1) * _branch(b, 1)


@graph_leaf
def div(a: Any, b: Any) -> OctaveTensor:
    """``a / b`` branch by branch."""
    return _branch(a, 0) / _branch(b, 0), _branch(a, 1) / _branch(b, 1)


@graph_leaf
def cat(parts: Sequence[Union[OctaveTensor, Tensor]], dim: int = 1) -> OctaveTensor:
    """Channel concat: highs together, lows together; a plain part joins the high branch whole."""
    highs = [p[0] if _is_octave(p) else p for p in parts]
    lows = [p[1] for p in parts if _is_octave(p)]
    return torch.cat(highs, dim), torch.cat(lows, dim)


@graph_leaf
def split_channels(x: Tensor, n_high: int, dim: int = 1) -> OctaveTensor:
    """A per-channel tensor's first ``n_high`` channels along ``dim`` and the rest: its high and low parts."""
    return x.narrow(dim, 0, n_high), x.narrow(dim, n_high, x.shape[dim] - n_high)


@graph_leaf
def size(x: OctaveTensor, dim: Union[int, None] = None) -> Union[torch.Size, int]:
    """The size the merged (plain) tensor would have."""
    high, low = x
    merged = torch.Size((high.shape[0], high.shape[1] + low.shape[1]) + tuple(high.shape[2:]))
    return merged if dim is None else merged[dim]



@graph_leaf
def channels_last(x: Tensor, function: str, *args: Any, **kwargs: Any) -> Tensor:
    """The function named ``function`` applied to ``x`` (``N, C, H, W``) viewed channels-last, as
    ``N, C, H, W`` again: the numbers of the channels-last region it comes from (some kernels,
    GELU's among them, round differently on other layouts)."""
    return _function(function)(x.permute(0, 2, 3, 1), *args, **kwargs).permute(0, 3, 1, 2)
