"""Ops that run on each branch unchanged: activations, BatchNorm, dropout, stochastic depth."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..layers import Branchwise, ChannelSplit, OctBatchNorm2d, OctStochasticDepth
from ..plan.facts import feature_args
from .registry import PER_BRANCH, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
               nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Identity)
DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
                        F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh, F.mish, F.dropout,
                        F.dropout2d, F.relu_, torch.relu_)
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_")


def _first_input(node: fx.Node) -> fx.Node:
    return next(iter(feature_args(node)))


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
register(Rule(PER_BRANCH, rewrite_batchnorm), nn.BatchNorm2d)
register(Rule(PER_BRANCH, rewrite_branch_function), *ACTIVATION_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_method), *(("method", name) for name in ACTIVATION_METHODS))
if StochasticDepth is not None:
    register(Rule(PER_BRANCH, rewrite_stochastic_depth), StochasticDepth)
