"""Channels-last regions (ConvNeXt blocks) on channels-first feature maps, and their octave rules.

A ConvNeXt block runs its ``LayerNorm`` and ``Linear`` layers between ``permute(0, 2, 3, 1)``
and ``permute(0, 3, 1, 2)``. :func:`channels_first` rewrites such a region, before planning,
so that every op in it works on the ``N, C, H, W`` map: ``nn.Linear`` becomes
``PointwiseLinear`` (a 1x1 convolution over the channels), ``nn.LayerNorm`` / ``F.layer_norm``
over the channels becomes ``ChannelLayerNorm``, element-wise activations and dropout run through
``ChannelsLast`` (modules) or ``ops.channels_last`` (functions), and both permutes go. Each
new op permutes internally, so the rewritten graph computes exactly the same numbers. A
region is rewritten only when every path from its first permute reaches a permute back
through these ops alone; otherwise it stays as it is (a boundary). The rules below then make
``PointwiseLinear`` an octave 1x1 convolution and ``ChannelLayerNorm`` a per-branch norm
(each branch over its own channels).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..capture.facts import feature_shape, value_of
from ..layers import ChannelSplit, OctConv2d
from ..layers.channels_last import (TO_CHANNELS_FIRST, TO_CHANNELS_LAST, ChannelLayerNorm, ChannelsLast,
                                    OctChannelLayerNorm, PointwiseLinear)
from .branchwise import (ACTIVATION_FUNCTIONS, ACTIVATIONS, emit_replacement, rewrite_branch_function,
                         rewrite_branch_module)
from .registry import CONV, PER_BRANCH, Rule, register, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

# Element-wise ops that mean the same on either layout (not Dropout2d: it drops whole channels).
ELEMENTWISE_MODULES = ACTIVATIONS + (nn.Dropout, nn.AlphaDropout)
ELEMENTWISE_FUNCTIONS = tuple(f for f in ACTIVATION_FUNCTIONS if f is not F.dropout2d)


def _permutation(node: fx.Node) -> Optional[Tuple[int, ...]]:
    """The dims of a ``permute`` node (``torch.permute`` or ``.permute()``), else None."""
    if node.op == "call_function" and node.target is torch.permute or \
            node.op == "call_method" and node.target == "permute":
        dims = node.args[1] if len(node.args) == 2 else node.args[1:] or node.kwargs.get("dims")
        if isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims) and len(dims) == 4:
            return tuple(d % 4 for d in dims)
    return None


def _channels_last_op(node: fx.Node, modules: Dict[str, nn.Module], channels: int) -> Optional[str]:
    """What ``node`` is in a channels-last region ("linear", "norm", "layer_norm", "elementwise",
    "function"), or None when it has no channels-first form."""
    if node.op == "call_module":
        module = modules[node.target]
        if len(node.args) != 1 or node.kwargs:
            return None
        if type(module) is nn.Linear:
            return "linear" if module.in_features == channels else None
        if type(module) is nn.LayerNorm:
            return "norm" if tuple(module.normalized_shape) == (channels,) else None
        in_place = getattr(module, "inplace", False)
        return "elementwise" if isinstance(module, ELEMENTWISE_MODULES) and not in_place else None
    if node.op == "call_function" and node.target is F.layer_norm:
        shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
        params = [node.kwargs.get(k, node.args[i] if len(node.args) > i else None)
                  for i, k in ((2, "weight"), (3, "bias"))]
        if tuple(shape or ()) == (channels,) and all(p is None or p.op == "get_attr" for p in params):
            return "layer_norm"
        return None
    if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        others = [a for a in node.all_input_nodes if a is not node.args[0]]
        return "function" if not others and not node.kwargs.get("inplace") else None
    return None


Region = Tuple[List[Tuple[fx.Node, str]], List[fx.Node]]


def _region(start: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Region]:
    """The ops between ``start`` (a permute to channels last) and its permutes back, with their
    kinds, and those permutes; None when the region has an op without a channels-first form."""
    members: List[Tuple[fx.Node, str]] = []
    ends: List[fx.Node] = []
    pending = [start]
    while pending:
        node = pending.pop()
        value = value_of(node)
        if not isinstance(value, torch.Tensor) or value.ndim != 4:
            return None
        for user in node.users:
            if _permutation(user) == TO_CHANNELS_FIRST:
                ends.append(user)
                continue
            kind = _channels_last_op(user, modules, int(value.shape[-1]))
            if kind is None or user.args[0] is not node:
                return None
            if user not in {member for member, _ in members}:
                members.append((user, kind))
                pending.append(user)
    return (members, ends) if ends else None


def channels_first(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``module`` whose channels-last regions run on channels-first maps (see the module docstring).

    Nodes must carry ``meta["val"]``; the copy's nodes do too. ``module`` is not changed.
    """
    graph = fx.Graph()
    graph.output(graph.graph_copy(module.graph, {}))
    result = fx.GraphModule(module, graph, type(module).__name__)
    modules = dict(result.named_modules())
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for start in [n for n in graph.nodes if _permutation(n) == TO_CHANNELS_LAST and feature_shape(n.args[0])]:
        region = _region(start, modules)
        if region is None or any(kind in ("linear", "norm") and calls[op.target] > 1 for op, kind in region[0]):
            continue
        members, ends = region
        for member, kind in members:
            _to_channels_first(result, member, kind)
        start.replace_all_uses_with(start.args[0])
        for end in ends:
            end.replace_all_uses_with(end.args[0])
            graph.erase_node(end)
        graph.erase_node(start)
    result.recompile()
    return result


def _to_channels_first(module: fx.GraphModule, node: fx.Node, kind: str) -> None:
    if kind == "linear":
        module.add_submodule(node.target, PointwiseLinear.from_linear(module.get_submodule(node.target)))
    elif kind == "norm":
        norm = module.get_submodule(node.target)
        module.add_submodule(node.target, ChannelLayerNorm.from_parameters(
            norm.normalized_shape[0], norm.weight, norm.bias, norm.eps).train(norm.training))
    elif kind == "layer_norm":
        node = _layer_norm_module(module, node)
    elif kind == "elementwise":
        name = f"{node.target}_channels_last"
        if name not in dict(module.named_modules()):
            module.add_submodule(name, ChannelsLast(module.get_submodule(node.target)))
        node.target = name
    elif kind == "function":
        node.args = (node.args[0], _get_qualified_name(node.target)) + tuple(node.args[1:])
        node.target = ops.channels_last
    node.meta["val"] = node.meta["val"].permute(TO_CHANNELS_FIRST)


def _layer_norm_module(module: fx.GraphModule, node: fx.Node) -> fx.Node:
    """Replace an ``F.layer_norm`` call by a ChannelLayerNorm named after its weight's owner."""
    signature = ("input", "normalized_shape", "weight", "bias", "eps")
    bound: Dict[str, Any] = dict(zip(signature, node.args), **node.kwargs)
    weight, bias = bound.get("weight"), bound.get("bias")
    name = weight.target.rpartition(".")[0] if weight is not None and weight.target.endswith(".weight") else node.name
    layer = ChannelLayerNorm.from_parameters(
        int(bound["normalized_shape"][0]), None if weight is None else module.get_parameter(weight.target),
        None if bias is None else module.get_parameter(bias.target), bound.get("eps", 1e-5))
    others = [n for n in module.graph.nodes if n.op in ("call_module", "get_attr") and n not in (weight, bias)]
    if any(n.target == name or n.target.startswith(f"{name}.") for n in others):
        name = node.name  # the weight's owner holds more than this norm
    module.add_submodule(name, layer)
    with module.graph.inserting_before(node):
        new = module.graph.call_module(name, (bound["input"],))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    module.graph.erase_node(node)
    for parameter in (weight, bias):
        if parameter is not None and not parameter.users:
            module.graph.erase_node(parameter)
    return new


def check_pointwise(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if feature_shape(node.args[0]) is None or feature_shape(node) is None:
        return "not applied to a 4-d feature map"
    return None


def rewrite_pointwise(node: fx.Node, ctx: "RewriteContext") -> None:
    """An octave 1x1 convolution with the linear layer's weights."""
    in_split, out_split = ctx.plan.conv_splits[node]
    if in_split is None and out_split is None:
        ctx.copy(node)
        return
    linear: PointwiseLinear = ctx.module(node)
    layer = OctConv2d.from_conv(linear.as_conv(),
                                in_split=in_split or ChannelSplit.trailing(linear.in_features, 0),
                                out_split=out_split or ChannelSplit.trailing(linear.out_features, 0))
    name = ctx.add_module(str(node.target), layer)
    ctx.emit(node, "call_module", name, (ctx.value(node.args[0], in_split, node),), {}, out_split)


@when_octave
def rewrite_channel_norm(node: fx.Node, ctx: "RewriteContext") -> None:
    emit_replacement(node, ctx, OctChannelLayerNorm(ctx.module(node), ctx.plan.layout(node)))


register(Rule(CONV, rewrite_pointwise, check_pointwise), PointwiseLinear)
register(Rule(PER_BRANCH, rewrite_channel_norm, check_pointwise), ChannelLayerNorm)
register(Rule(PER_BRANCH, rewrite_branch_module), ChannelsLast)
register(Rule(PER_BRANCH, rewrite_branch_function), ops.channels_last)
