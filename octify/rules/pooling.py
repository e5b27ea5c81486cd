"""Pooling and nearest-neighbour resizing of feature maps, run on each branch (``octify.layers.pooling``).

Max and average pooling (modules and functions) become :class:`OctPool2d` where its size
rule holds at every input size; resizing (``F.interpolate``, ``nn.Upsample`` and its
subclasses) becomes :class:`OctInterpolate` where it is exact: nearest neighbour by a
whole-number factor. Everything else is a boundary, with the reason.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch.nn.functional as F
from torch import fx, nn

from ..capture.facts import bound_arguments, feature_shape, is_feature_map, node_args, spatial
from ..layers.pooling import (NEAREST_MODES, OctInterpolate, OctPool2d, Pool, is_whole_enlargement,
                              pool_size_problem)
from .registry import PER_BRANCH, Rule, register, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

POOLS = (nn.MaxPool2d, nn.AvgPool2d)
POOL_FUNCTIONS = {
    F.max_pool2d: (nn.MaxPool2d, inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: 0)),
    F.avg_pool2d: (nn.AvgPool2d, inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
        divisor_override=None: 0)),
}
RESIZES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
INTERPOLATE_SIGNATURE = inspect.signature(F.interpolate)


def _pool(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Pool]:
    """The pooling module a node runs: its own, or the module equal to a pooling function call."""
    if node.op == "call_module":
        return modules[node.target]
    module_type, signature = POOL_FUNCTIONS[node.target]
    try:
        bound = signature.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    arguments = dict(bound.arguments)
    del arguments["input"]
    if not arguments.get("stride"):  # the functions' default (None or []): the kernel size
        arguments["stride"] = arguments["kernel_size"]
    return module_type(**arguments)


def check_pooling(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if feature_shape(node.args[0] if node.args else None) is None:
        return "not applied to a 4-d feature map"
    computed = [arg.name for arg in node_args(node) if not is_feature_map(arg)]
    if computed:  # F.avg_pool2d(x, x.size()[2:]): the geometry is known only when it runs
        return f"its kernel, stride or padding is computed in the graph (from {', '.join(computed)})"
    pool = _pool(node, modules)
    if pool is None:
        return f"the arguments of {node.target.__name__} could not be read"
    return pool_size_problem(pool)


@when_octave
def rewrite_pooling(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if node.op == "call_module":
        pool = ctx.module(node)
        name = ctx.shared_module(("pool", id(pool)), lambda: OctPool2d(pool), str(node.target))
    else:
        name = ctx.add_module(node.name, OctPool2d(_pool(node, ctx.old_modules)))
    ctx.emit(node, "call_module", name, (ctx.value(node.args[0], split, node),), {}, split)


def _resize_arguments(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Dict[str, Any]]:
    """``F.interpolate``'s arguments for a resize node (a module's are its attributes)."""
    if node.op == "call_module":
        module = modules[node.target]
        return {"input": node.args[0] if node.args else None, "size": module.size,
                "scale_factor": module.scale_factor, "mode": module.mode, "antialias": False}
    return bound_arguments(INTERPOLATE_SIGNATURE, node)


def is_resize(node: fx.Node, modules: Dict[str, nn.Module]) -> bool:
    """``F.interpolate`` or a resizing module, whatever its mode."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), RESIZES)
    return node.op == "call_function" and node.target is F.interpolate


def check_resize(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    arguments = _resize_arguments(node, modules)
    if arguments is None:
        return "the arguments of the interpolation could not be read"
    source = arguments["input"]
    if feature_shape(source) is None or feature_shape(node) is None:
        return "not applied to a 4-d feature map"
    if arguments["mode"] not in NEAREST_MODES or arguments["antialias"]:
        return (f"{arguments['mode']} resizing blends neighbouring pixels, so no per-branch rule reproduces it "
                "exactly (nearest-neighbour resizing has one)")
    scale_factor = arguments["scale_factor"]
    if scale_factor is not None:
        if is_whole_enlargement(scale_factor):
            return None
        return f"scale factor {scale_factor} is not a whole number of at least 1, so no per-branch rule is exact"
    before, after = spatial(source), spatial(node)
    if all(a % b == 0 for a, b in zip(after, before)):
        return None
    return (f"resizing {before[0]}x{before[1]} to {after[0]}x{after[1]} is not a whole-number enlargement, "
            "so no per-branch rule is exact")


@when_octave
def rewrite_resize(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    arguments = _resize_arguments(node, ctx.old_modules)
    source = ctx.value(arguments["input"], split, node)
    if node.op == "call_module":
        module = ctx.module(node)
        name = ctx.shared_module(("resize", id(module)), lambda: OctInterpolate(
            module.size, module.scale_factor, module.mode), str(node.target))
        ctx.emit(node, "call_module", name, (source,), {}, split)
        return
    name = ctx.add_module(node.name, OctInterpolate(scale_factor=arguments["scale_factor"], mode=arguments["mode"]))
    size = ctx.values(arguments["size"], None, node)
    ctx.emit(node, "call_module", name, (source,) if size is None else (source, size), {}, split)


register(Rule(PER_BRANCH, rewrite_pooling, check_pooling), *POOLS, *POOL_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_resize, check_resize), *RESIZES, F.interpolate)
