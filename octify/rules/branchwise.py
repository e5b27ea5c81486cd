"""Ops that run on each branch unchanged: activations, BatchNorm, dropout, pooling, stochastic depth."""
from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..layers import Branchwise, ChannelSplit, OctBatchNorm2d, OctStochasticDepth
from ..plan.facts import feature_args, is_feature_map, node_args
from .registry import PER_BRANCH, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
               nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Identity)
DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
                        F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh, F.mish, F.dropout,
                        F.dropout2d, F.relu_, torch.relu_)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d)
POOL_SIGNATURES = {
    F.max_pool2d: inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: 0),
    F.avg_pool2d: inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
        divisor_override=None: 0),
}
SIZE_CHECK_LIMIT = 1024
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_")


def _first_input(node: fx.Node) -> fx.Node:
    return next(iter(feature_args(node)))


def _pool_output(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dimension."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_geometry(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Dict[str, Any]]:
    if node.op == "call_module":
        pool = modules[node.target]
        params = {"kernel_size": pool.kernel_size, "stride": pool.stride, "padding": pool.padding,
                  "dilation": getattr(pool, "dilation", 1), "ceil_mode": pool.ceil_mode}
        extra = getattr(pool, "return_indices", False) or getattr(pool, "divisor_override", None)
    else:
        signature = POOL_SIGNATURES[node.target]
        try:
            bound = signature.bind(*node.args, **node.kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        params = {k: bound.arguments.get(k, 1) for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
        params["stride"] = params["stride"] or params["kernel_size"]
        extra = bound.arguments.get("return_indices") or bound.arguments.get("divisor_override")
    return None if extra else params


def check_pooling(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """Per-branch pooling must keep the low branch at ceil(half) of the high branch at every input size."""
    computed = [arg.name for arg in node_args(node) if not is_feature_map(arg)]
    if computed:  # F.avg_pool2d(x, x.size()[2:]): the geometry is known only when it runs
        return f"its kernel, stride or padding is computed in the graph (from {', '.join(computed)})"
    params = _pool_geometry(node, modules)
    if params is None:
        return "pooling with indices or a divisor override has no octave rule"
    per_dim = [tuple(_pair(params[k])[d] for k in ("kernel_size", "stride", "padding", "dilation")) + (
        bool(params["ceil_mode"]),) for d in (0, 1)]
    for kernel, stride, padding, dilation, ceil_mode in per_dim:
        for size in range(2, SIZE_CHECK_LIMIT):
            high = _pool_output(size, kernel, stride, padding, dilation, ceil_mode)
            low = _pool_output((size + 1) // 2, kernel, stride, padding, dilation, ceil_mode)
            if high > 0 and low != (high + 1) // 2:
                return (f"this pooling (kernel {kernel}, stride {stride}, padding {padding}) would leave the "
                        f"low branch off half the high size for {size}-pixel inputs")
    return None


def _pair(value: Any) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def rewrite_branch_module(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    source = ctx.value(_first_input(node), split, node)
    module = ctx.module(node)
    if getattr(module, "inplace", False) and ctx.is_split(source):
        module = _copy_without_inplace(module)
    name = ctx.shared_module(("branchwise", id(module)), lambda: Branchwise(module), str(node.target))
    ctx.emit(node, "call_module", name, (source,), {}, split)


def _copy_without_inplace(module: nn.Module) -> nn.Module:
    clone = copy.copy(module)
    clone.inplace = False
    return clone


def _replace_module(node: fx.Node, ctx: "RewriteContext",
                    make: Callable[[nn.Module, ChannelSplit], nn.Module]) -> None:
    """Emit ``make(module, split)`` under the module's own name where the node is octave."""
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    name = ctx.add_module(str(node.target), make(ctx.module(node), split))
    ctx.emit(node, "call_module", name, (ctx.value(_first_input(node), split, node),), {}, split)


def rewrite_batchnorm(node: fx.Node, ctx: "RewriteContext") -> None:
    _replace_module(node, ctx, OctBatchNorm2d.from_bn)


def rewrite_stochastic_depth(node: fx.Node, ctx: "RewriteContext") -> None:
    _replace_module(node, ctx, lambda original, split: OctStochasticDepth(original.p, original.mode)
                    .train(original.training))


def rewrite_branch_function(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    source = ctx.value(node.args[0], split, node)
    kwargs = dict(node.kwargs)
    if kwargs.get("inplace") and ctx.is_split(source):
        kwargs["inplace"] = False
    rest = ctx.values(tuple(node.args[1:]), None, node)
    ctx.emit(node, "call_function", ops.branchwise, (_get_qualified_name(node.target), source) + rest, kwargs, split)


def rewrite_branch_method(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    name = node.target
    source = ctx.value(node.args[0], split, node)
    if name.endswith("_") and ctx.is_split(source):
        name = name[:-1]
    rest = ctx.values(tuple(node.args[1:]), None, node)
    ctx.emit(node, "call_function", ops.branchwise_method, (name, source) + rest, dict(node.kwargs), split)


try:
    from torchvision.ops import StochasticDepth
except ImportError:  # pragma: no cover - torchvision is a dependency, but the rule is optional
    StochasticDepth = None

register(Rule(PER_BRANCH, rewrite_branch_module), *ACTIVATIONS, *DROPOUTS)
register(Rule(PER_BRANCH, rewrite_branch_module, check_pooling), *POOLS)
register(Rule(PER_BRANCH, rewrite_batchnorm), nn.BatchNorm2d)
register(Rule(PER_BRANCH, rewrite_branch_function), *ACTIVATION_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_function, check_pooling), *POOL_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_method), *(("method", name) for name in ACTIVATION_METHODS))
if StochasticDepth is not None:
    register(Rule(PER_BRANCH, rewrite_stochastic_depth), StochasticDepth)
