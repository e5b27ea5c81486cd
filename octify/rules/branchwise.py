"""Ops that run on each branch unchanged: activations, BatchNorm, dropout, pooling, stochastic depth."""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..layers import Branchwise, OctBatchNorm2d, OctStochasticDepth
from ..layers.channels import half_size
from ..plan.facts import feature_args, spatial
from .registry import PER_BRANCH, Rule, register

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
               nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Identity)
DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
                        F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh, F.mish, F.dropout,
                        F.dropout2d, F.relu_, torch.relu_)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d)
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_")


def _first_input(node: fx.Node) -> fx.Node:
    return next(iter(feature_args(node)))


def check_resizing(apply: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[fx.Node, Dict[str, nn.Module]], Optional[str]]:
    """For pooling: the low branch's output must be half (ceil) of the high branch's output."""
    def check(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
        source = next(iter(feature_args(node)), None)
        if source is None:
            return "not applied to a 4-d feature map"
        low_in = half_size(spatial(source))
        low_out = apply(node, modules, torch.empty(1, 1, *low_in, device="meta")).shape[-2:]
        if tuple(low_out) != half_size(spatial(node)):
            return f"on the half-resolution branch it would give {tuple(low_out)}, not half of {spatial(node)}"
        return None
    return check


def _apply_module(node: fx.Node, modules: Dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    return modules[node.target](x)


def _apply_function(node: fx.Node, modules: Dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    return node.target(x, *node.args[1:], **node.kwargs)


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


def rewrite_batchnorm(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    name = ctx.add_module(str(node.target), OctBatchNorm2d.from_bn(ctx.module(node), split))
    ctx.emit(node, "call_module", name, (ctx.value(_first_input(node), split, node),), {}, split)


def rewrite_stochastic_depth(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    if split is None:
        ctx.copy(node)
        return
    original = ctx.module(node)
    layer = OctStochasticDepth(original.p, original.mode)
    layer.train(original.training)
    name = ctx.add_module(str(node.target), layer)
    ctx.emit(node, "call_module", name, (ctx.value(_first_input(node), split, node),), {}, split)


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
register(Rule(PER_BRANCH, rewrite_branch_module, check_resizing(_apply_module)), *POOLS)
register(Rule(PER_BRANCH, rewrite_batchnorm), nn.BatchNorm2d)
register(Rule(PER_BRANCH, rewrite_branch_function), *ACTIVATION_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_function, check_resizing(_apply_function)), *POOL_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_method), *(("method", name) for name in ACTIVATION_METHODS))
if StochasticDepth is not None:
    register(Rule(PER_BRANCH, rewrite_stochastic_depth), StochasticDepth)
