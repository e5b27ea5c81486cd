"""Ops that read an octave tensor without needing it merged: global average and max pooling, size queries,
and ``new_empty``-like factories that take only the tensor's dtype and device."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Dict, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import ops
from ..capture.facts import feature_shape
from ..layers import OctGlobalAvgPool, OctGlobalMaxPool
from .registry import GLOBAL_POOL, SHAPE, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

SPATIAL_DIMS = ({2, 3}, {-1, -2})
MAX_POOLS = (nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d, torch.amax, ("method", "amax"))
BRANCH_ATTRIBUTES = ("ndim", "dtype", "device", "is_cuda")  # alike for the high branch and the merged tensor
FACTORY_METHODS = ("new_empty", "new_zeros", "new_ones", "new_full", "new_tensor")


def _is_global(output_size: object) -> bool:
    return output_size in (1, (1, 1), [1, 1])


def _is_max(node: fx.Node, modules: Dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.AdaptiveMaxPool2d)
    return (("method", node.target) if node.op == "call_method" else node.target) in MAX_POOLS


def _is_adaptive(node: fx.Node) -> bool:
    return node.op == "call_module" or node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)


def _reduce_dims_and_keepdim(node: fx.Node):
    """``dim`` and ``keepdim`` of a ``mean`` or ``amax`` call."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    return dims, keepdim


def _adaptive_problem(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if node.op == "call_module":
        module = modules[node.target]
        size, indices = module.output_size, getattr(module, "return_indices", False)
    else:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        indices = node.args[2] if len(node.args) > 2 else node.kwargs.get("return_indices", False)
    if indices:
        return "adaptive max pooling that returns indices has no octave rule (the indices would refer to two maps)"
    if not _is_global(size):
        return (f"adaptive pooling to {size} (not 1x1) gives a plain map whose bins do not line up with the low "
                "branch's 2x2 blocks, so octify merges the branches before it")
    return None


def check_global_pool(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if feature_shape(node.args[0] if node.args else None) is None:
        return "not applied to a 4-d feature map"
    if _is_adaptive(node):
        return _adaptive_problem(node, modules)
    dims, _ = _reduce_dims_and_keepdim(node)
    if isinstance(dims, (list, tuple)) and set(dims) in SPATIAL_DIMS and not node.kwargs.get("dtype"):
        return None
    return f"a {'max' if _is_max(node, modules) else 'mean'} that is not over both spatial dimensions"


def rewrite_global_pool(node: fx.Node, ctx: "RewriteContext") -> None:
    source = node.args[0]
    split = ctx.rep.get(source)
    if split is None:
        ctx.copy(node)
        return
    keepdim = True if _is_adaptive(node) else bool(_reduce_dims_and_keepdim(node)[1])
    layer = OctGlobalMaxPool if _is_max(node, ctx.old_modules) else OctGlobalAvgPool
    name = ctx.shared_module(("global_pool", layer, split, keepdim), lambda: layer(split, keepdim),
                             f"global_pool_{node.name}")
    ctx.emit(node, "call_module", name, (ctx.env[source],), {}, None)


def rewrite_size(node: fx.Node, ctx: "RewriteContext") -> None:
    source = node.args[0]
    if not isinstance(source, fx.Node) or ctx.rep.get(source) is None:
        ctx.copy(node)
        return
    if node.op == "call_function" and node.args[1] in BRANCH_ATTRIBUTES:
        ctx.emit(node, "call_function", getattr, (_high(source, ctx), node.args[1]), {}, None)
        return
    rest = node.args[1:] if node.op == "call_method" else ()
    ctx.emit(node, "call_function", ops.size, (ctx.env[source], *rest), dict(node.kwargs), None)


def check_size(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if node.op == "call_function" and (len(node.args) != 2 or node.args[1] not in ("shape",) + BRANCH_ATTRIBUTES):
        return f"the attribute .{node.args[1:]}" if len(node.args) != 2 else f"the attribute .{node.args[1]}"
    return None


def _high(source: fx.Node, ctx: "RewriteContext") -> fx.Node:
    """The high branch of octave ``source``: it has the merged tensor's dtype, device and number of dimensions."""
    return ctx.graph.call_function(operator.getitem, (ctx.env[source], 0))


def rewrite_factory(node: fx.Node, ctx: "RewriteContext") -> None:
    """``x.new_zeros(size)`` and the like read only ``x``'s dtype and device: the high branch's."""
    if not isinstance(node.args[0], fx.Node) or ctx.rep.get(node.args[0]) is None:
        ctx.copy(node)
        return
    rest, kwargs = ctx.values((node.args[1:], node.kwargs), None, node)
    ctx.emit(node, "call_method", node.target, (_high(node.args[0], ctx), *rest), kwargs, None)


register(Rule(GLOBAL_POOL, rewrite_global_pool, check_global_pool),
         nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, torch.mean, ("method", "mean"), *MAX_POOLS)
register(Rule(SHAPE, rewrite_size, check_size), ("method", "size"), getattr)
register(Rule(SHAPE, rewrite_factory), *(("method", name) for name in FACTORY_METHODS))
