"""Binary element-wise ops: add, sub, mul, div, between octave tensors or with per-channel vectors."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import torch
from torch import fx, nn

from .. import ops
from ..capture.facts import broadcasts_to_both, feature_shape, is_per_channel, value_of
from ..layers import ChannelSplitter
from .registry import ELEMENTWISE, Rule, register, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

OPERATORS: Dict[Any, Callable[[Any, Any], Any]] = {
    operator.add: ops.add, operator.iadd: ops.add, torch.add: ops.add,
    operator.sub: ops.sub, operator.isub: ops.sub, torch.sub: ops.sub,
    operator.mul: ops.mul, operator.imul: ops.mul, torch.mul: ops.mul,
    operator.truediv: ops.div, operator.itruediv: ops.div, torch.div: ops.div,
}
METHODS = {"add": ops.add, "add_": ops.add, "sub": ops.sub, "sub_": ops.sub,
           "mul": ops.mul, "mul_": ops.mul, "div": ops.div, "div_": ops.div}


def _operator(node: fx.Node) -> Callable[[Any, Any], Any]:
    return METHODS[node.target] if node.op == "call_method" else OPERATORS[node.target]


def check_elementwise(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    out = feature_shape(node)
    if out is None:
        return "its result is not a 4-d feature map"
    if len(node.args) != 2 or node.kwargs:
        return "only plain two-operand forms have an octave rule"
    for arg in node.args:
        if feature_shape(arg) == out or is_per_channel(arg, int(out[1])) or broadcasts_to_both(arg):
            continue
        shape = tuple(value_of(arg).shape) if isinstance(value_of(arg), torch.Tensor) else type(arg).__name__
        return f"operand {getattr(arg, 'name', arg)} of shape {shape} does not broadcast per channel"
    return None


@when_octave
def rewrite_elementwise(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    out = feature_shape(node)
    operands = []
    for arg in node.args:
        if feature_shape(arg) == out:
            operands.append(ctx.value(arg, split, node))
        elif isinstance(arg, fx.Node) and is_per_channel(arg, int(out[1])):
            channel_dim = value_of(arg).ndim - 3
            if arg.op == "get_attr" and split.is_trailing:
                # A parameter (ConvNeXt's layer scale) is no module's input: torch's module
                # tracker (FlopCounterMode) fails on one in inference mode.
                operands.append(ctx.graph.call_function(ops.split_channels, (ctx.value(arg, None, node),
                                                                               split.n_high, channel_dim)))
                continue
            name = ctx.shared_module(("channels", split, channel_dim),
                                     lambda: ChannelSplitter(split, channel_dim), "channel_split")
            operands.append(ctx.graph.call_module(name, (ctx.value(arg, None, node),)))
        else:
            operands.append(ctx.values(arg, None, node))
    ctx.emit(node, "call_function", _operator(node), tuple(operands), {}, split)


register(Rule(ELEMENTWISE, rewrite_elementwise, check_elementwise), *OPERATORS,
         *(("method", name) for name in METHODS))
