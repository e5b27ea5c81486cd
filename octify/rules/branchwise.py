"""Ops that run on each branch unchanged: activations, BatchNorm, dropout, stochastic depth.

Besides the listed functions and methods, every torch function or tensor method that ATen tags
``pointwise`` (each output element depends only on the same element of the input: ``clamp``,
``sigmoid``, ``pow``...) runs per branch, as long as its other arguments are numbers or
tensors that apply alike to both branches (:func:`check_per_branch_call`).
"""
from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..capture.facts import broadcasts_to_both, feature_args, feature_shape
from ..layers import Branchwise, OctBatchNorm2d, OctStochasticDepth
from .registry import PER_BRANCH, Rule, register, register_fallback, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
               nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Identity, nn.SELU, nn.CELU, nn.Softplus, nn.Softsign,
               nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Hardshrink, nn.Softshrink, nn.RReLU)
DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid,
                        F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh, F.mish, F.dropout,
                        F.dropout2d, F.relu_, torch.relu_, F.alpha_dropout, F.feature_alpha_dropout, F.logsigmoid,
                        F.softsign, F.tanhshrink, F.threshold)
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_")


def _first_input(node: fx.Node) -> fx.Node:
    return next(iter(feature_args(node)))


def is_pointwise(key: Any) -> bool:
    """A torch function or ``("method", name)`` whose ATen op of the same name is tagged pointwise."""
    if isinstance(key, tuple):
        name = key[1]
    elif str(getattr(key, "__module__", None) or "").split(".")[0] == "torch":
        name = getattr(key, "__name__", "")
    else:
        return False
    return isinstance(name, str) and _aten_pointwise(name)


@functools.lru_cache(maxsize=None)
def _aten_pointwise(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    return packet is not None and any(torch.Tag.pointwise in getattr(packet, overload).tags
                                      for overload in packet.overloads())


def check_per_branch_call(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """The first argument is the feature map, the result has its shape, the rest applies alike to both branches."""
    source = node.args[0] if node.args else None
    if feature_shape(source) is None or feature_shape(node) != feature_shape(source):
        return "not a feature map in and a feature map of the same shape out"
    rest: List[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), rest.append)
    for arg in rest:
        if not broadcasts_to_both(arg):
            shape = tuple(feature_shape(arg) or getattr(arg.meta.get("val"), "shape", ()))
            return f"its argument {arg.name} (shape {shape}) is a tensor that does not apply alike to both branches"
    return None


@when_octave
def rewrite_branch_module(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
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


def emit_replacement(node: fx.Node, ctx: "RewriteContext", module: nn.Module) -> None:
    """Emit ``module`` in place of an octave node's module, under its name, on its input in the node's split."""
    split = ctx.plan.layout(node)
    name = ctx.add_module(str(node.target), module)
    ctx.emit(node, "call_module", name, (ctx.value(_first_input(node), split, node),), {}, split)


@when_octave
def rewrite_batchnorm(node: fx.Node, ctx: "RewriteContext") -> None:
    emit_replacement(node, ctx, OctBatchNorm2d.from_bn(ctx.module(node), ctx.plan.layout(node)))


@when_octave
def rewrite_stochastic_depth(node: fx.Node, ctx: "RewriteContext") -> None:
    original = ctx.module(node)
    emit_replacement(node, ctx, OctStochasticDepth(original.p, original.mode).train(original.training))


@when_octave
def rewrite_branch_function(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    source = ctx.value(node.args[0], split, node)
    kwargs = dict(node.kwargs)
    if kwargs.get("inplace") and ctx.is_split(source):
        kwargs["inplace"] = False
    rest = ctx.values(tuple(node.args[1:]), None, node)
    ctx.emit(node, "call_function", ops.branchwise, (_get_qualified_name(node.target), source) + rest, kwargs, split)


@when_octave
def rewrite_branch_method(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
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
register(Rule(PER_BRANCH, rewrite_branch_function, check_per_branch_call), *ACTIVATION_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_branch_method, check_per_branch_call),
         *(("method", name) for name in ACTIVATION_METHODS))
register_fallback(Rule(PER_BRANCH, rewrite_branch_function, check_per_branch_call),
                  lambda key: not isinstance(key, tuple) and is_pointwise(key))
register_fallback(Rule(PER_BRANCH, rewrite_branch_method, check_per_branch_call),
                  lambda key: isinstance(key, tuple) and is_pointwise(key))
if StochasticDepth is not None:
    register(Rule(PER_BRANCH, rewrite_stochastic_depth), StochasticDepth)
