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
from .layers.checks import OctaveTensor, branch_of, is_octave



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


@lru_cache(maxsize=None)
def _function(qualified_name: str) -> Callable[..., Any]:
    module_name, _, attribute = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


@graph_leaf
def branchwise(function: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """The function named ``function`` (e.g. ``"torch.nn.functional.relu"``) applied to each branch."""
    fn = _function(function)
    return tuple(fn(x[i], *(branch_of(a, i) for a in args), **kwargs) for i in (0, 1))


@graph_leaf
def branchwise_method(name: str, x: OctaveTensor, *args: Any, **kwargs: Any) -> OctaveTensor:
    """Tensor method ``name`` called on each branch, e.g. ``branchwise_method("relu", x)``."""
    return tuple(getattr(x[i], name)(*(branch_of(a, i) for a in args), **kwargs) for i in (0, 1))


@graph_leaf
def add(a: Any, b: Any) -> OctaveTensor:
    """``a + b`` branch by branch."""
    return branch_of(a, 0) + branch_of(b, 0), branch_of(a, 1) + branch_of(b, 1)


@graph_leaf
def sub(a: Any, b: Any) -> OctaveTensor:
    """``a - b`` branch by branch."""
    return branch_of(a, 0) - branch_of(b, 0), branch_of(a, 1) - branch_of(b, 1)


@graph_leaf
def mul(a: Any, b: Any) -> OctaveTensor:
    """``a * b`` branch by branch."""
    return branch_of(a, 0) * branch_of(b, 0), branch_of(a, 1) * branch_of(b, 1)


@graph_leaf
def div(a: Any, b: Any) -> OctaveTensor:
    """``a / b`` branch by branch."""
    return branch_of(a, 0) / branch_of(b, 0), branch_of(a, 1) / branch_of(b, 1)


@graph_leaf
def cat(parts: Sequence[Union[OctaveTensor, Tensor]], dim: int = 1) -> OctaveTensor:
    """Channel concat: highs together, lows together; a plain part joins the high branch whole."""
    highs = [p[0] if is_octave(p) else p for p in parts]
    lows = [p[1] for p in parts if is_octave(p)]
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
def fixed_shape(x: Tensor, traced: Tuple[int, ...], dims: Tuple[int, ...]) -> Tensor:
    """``x`` unchanged when it matches the ``traced`` shape in ``dims`` (and in rank); ValueError otherwise.

    Guards a module traced with its input's sizes fixed: another size could take another path.
    """
    shape = tuple(x.shape)
    if len(shape) != len(traced) or any(shape[d] != traced[d] for d in dims):
        accepted = accepted_shape(traced, dims)
        wanted = ",".join(map(str, shape))
        raise ValueError(f"this module was converted with its input's sizes fixed at {tuple(traced)} (the model's "
                         f"forward reads them, so another size could take another path): it accepts inputs of "
                         f"shape {accepted} only, got {shape}; convert the model again for this size "
                         f"(input_shape={shape} / --input-shape {wanted})")
    return x


def accepted_shape(traced: Sequence[int], dims: Sequence[int]) -> str:
    """``(*, 3, 224, 224)``: the traced sizes of ``dims``, ``*`` for any other dimension."""
    return "(" + ", ".join(str(traced[d]) if d in dims else "*" for d in range(len(traced))) + ")"


@graph_leaf
def channels_last(x: Tensor, function: str, *args: Any, **kwargs: Any) -> Tensor:
    """The function named ``function`` applied to ``x`` (``N, C, H, W``) viewed channels-last, as
    ``N, C, H, W`` again: the numbers of the channels-last region it comes from (some kernels,
    GELU's among them, round differently on other layouts)."""
    return _function(function)(x.permute(0, 2, 3, 1), *args, **kwargs).permute(0, 3, 1, 2)
