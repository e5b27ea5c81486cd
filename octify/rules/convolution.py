"""Convolutions become octave layers, weights sliced from the original.

* ``nn.Conv2d`` (exact type) becomes an ``OctConv2d`` with the original's geometry.
* timm's ``Conv2dSame`` (TensorFlow SAME padding, computed at run time) becomes an
  ``OctConv2d`` with ``padding="same"``, which pads the same way at any stride; the tracer
  keeps it a leaf, so the converted graph stays valid at any input size.
* ``F.conv2d`` whose weight is a parameter or computed in the graph from parameters
  (timm's ``StdConv2d`` / ``ScaledStdConv2d`` standardize theirs on every forward, and are
  traced into) becomes a ``FunctionalOctConv2d``: the graph keeps computing the weight and
  the layer slices it into the paths as it runs. A weight computed from the network input
  (per-sample weights, as in ``CondConv2d``) stays plain.
* Other ``nn.Conv2d`` subclasses that compute something else (a standardized weight, a size
  remembered from the first call, routed per-sample weights) stay plain, with the reason,
  when they are leaves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch.nn.functional as F
from torch import fx, nn

from ..capture.facts import (CONV_ARGS, CONV_DEFAULTS, ConvFacts, call_args, channels, conv_facts, conv_name,
                          feature_args, feature_shape)
from ..layers import ChannelSplit, FunctionalOctConv2d, OctConv2d
from ..layers.octconv import geometry_problem
from .registry import CONV, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext


def _geometry_reason(facts: ConvFacts, padding: Any) -> Optional[str]:
    problem = geometry_problem(facts.kernel_size, facts.stride, padding, facts.dilation)
    return f"octave paths need a different geometry: OctConv2d {problem}" if problem else None


def _feature_map_reason(node: fx.Node) -> Optional[str]:
    if feature_shape(next(iter(feature_args(node)), None)) is None or feature_shape(node) is None:
        return "not applied to a 4-d feature map"
    return None


def _splits(node: fx.Node, ctx: "RewriteContext", facts: ConvFacts) -> Tuple[ChannelSplit, ChannelSplit]:
    """The planned splits of a convolution, a plain side as a split with no low channel."""
    in_split, out_split = ctx.plan.conv_splits[node]
    return (in_split or ChannelSplit.trailing(facts.in_channels, 0),
            out_split or ChannelSplit.trailing(facts.out_channels, 0))


# -- modules ---------------------------------------------------------------------------------------

def module_rule(padding: Optional[str] = None) -> Rule:
    """The rule for a convolution module; ``padding`` replaces the module's own (``"same"``: TF SAME)."""

    def check(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
        facts = conv_facts(node, modules)
        return _feature_map_reason(node) or _geometry_reason(facts, facts.padding if padding is None else padding)

    def rewrite(node: fx.Node, ctx: "RewriteContext") -> None:
        planned_in, planned_out = ctx.plan.conv_splits[node]
        if planned_in is None and planned_out is None:
            ctx.copy(node)
            return
        in_split, out_split = _splits(node, ctx, conv_facts(node, ctx.old_modules))
        layer = OctConv2d.from_conv(ctx.module(node), in_split=in_split, out_split=out_split, padding=padding,
                                    strided_high=ctx.plan.strided_high and padding is None)
        name = ctx.add_module(str(node.target), layer)
        source = next(iter(feature_args(node)))
        ctx.emit(node, "call_module", name, (ctx.value(source, planned_in, node),), {}, planned_out)

    return Rule(CONV, rewrite, check)


def stays_plain(reason: str) -> Rule:
    """A convolution module that computes more than its weight says: plain, for ``reason``."""
    return Rule(CONV, lambda node, ctx: ctx.copy(node), lambda node, modules: reason)


register(module_rule(), nn.Conv2d)


# -- F.conv2d --------------------------------------------------------------------------------------

def _depends_on_input(node: Any) -> bool:
    """Whether a graph value is computed from a placeholder (the network's input)."""
    seen, pending = set(), [node] if isinstance(node, fx.Node) else []
    while pending:
        current = pending.pop()
        if current.op == "placeholder":
            return True
        for parent in current.all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                pending.append(parent)
    return False


def check_functional_conv(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    reason = _feature_map_reason(node)
    if reason:
        return reason
    args = call_args(node, CONV_ARGS, CONV_DEFAULTS)
    if not isinstance(args["weight"], fx.Node) or feature_shape(args["weight"]) is None:
        return "its weight is not a 4-d tensor of the graph"
    if _depends_on_input(args["weight"]) or _depends_on_input(args["bias"]):
        return "its weight is computed from the network input (per-sample weights, as in CondConv2d)"
    if any(isinstance(args[name], fx.Node) for name in ("stride", "padding", "dilation", "groups")):
        return "stride, padding, dilation or groups is computed in the graph"
    facts = conv_facts(node, modules)
    if facts.in_channels != channels(args["input"]):
        return (f"its weight expects {facts.in_channels} input channels "
                f"but the input has {channels(args['input'])}")
    return _geometry_reason(facts, facts.padding)


def rewrite_functional_conv(node: fx.Node, ctx: "RewriteContext") -> None:
    planned_in, planned_out = ctx.plan.conv_splits[node]
    if planned_in is None and planned_out is None:
        ctx.copy(node)
        return
    facts = conv_facts(node, ctx.old_modules)
    args = call_args(node, CONV_ARGS, CONV_DEFAULTS)
    in_split, out_split = _splits(node, ctx, facts)
    layer = FunctionalOctConv2d(facts.in_channels, facts.out_channels, facts.kernel_size, facts.stride,
                                facts.padding, facts.dilation, facts.groups, args["bias"] is not None,
                                in_split=in_split, out_split=out_split)
    module_name = conv_name(node)
    name = ctx.add_module(f"{module_name}.octave" if module_name != node.name else node.name, layer)
    weight, bias = ctx.values((args["weight"], args["bias"]), None, node)
    ctx.emit(node, "call_module", name, (ctx.value(args["input"], planned_in, node), weight, bias), {},
             planned_out)


register(Rule(CONV, rewrite_functional_conv, check_functional_conv), F.conv2d)


# -- timm ------------------------------------------------------------------------------------------

def _register_timm() -> None:
    try:
        from timm.layers import CondConv2d, Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, \
            StdConv2dSame
        from timm.layers.conv2d_same import Conv2dSameExport
    except ImportError:  # timm is optional
        return
    register(module_rule(padding="same"), Conv2dSame)
    standardized = stays_plain("it standardizes its weight on every forward; octify converts it when it is "
                               "traced into (do not make it a leaf)")
    register(standardized, StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)
    register(stays_plain("it pads by the input size it saw first; use timm's Conv2dSame"), Conv2dSameExport)
    register(stays_plain("its weights are mixed per sample from routing weights"), CondConv2d)


_register_timm()
