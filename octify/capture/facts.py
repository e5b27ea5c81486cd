"""Shape facts about graph nodes, read from ``node.meta["val"]`` (set by the capture stage), and the
facts of convolution nodes."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn


def value_of(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def feature_shape(node: Any) -> Optional[torch.Size]:
    """The shape of a 4-d floating-point tensor value (a feature map ``N, C, H, W``), else None."""
    value = value_of(node)
    if isinstance(value, torch.Tensor) and value.ndim == 4 and value.is_floating_point():
        return value.shape
    return None


def is_feature_map(node: Any) -> bool:
    return feature_shape(node) is not None


def spatial(node: fx.Node) -> Tuple[int, int]:
    shape = feature_shape(node)
    return int(shape[2]), int(shape[3])


def channels(node: fx.Node) -> int:
    return int(feature_shape(node)[1])


def node_args(node: fx.Node) -> List[fx.Node]:
    """Every node among ``node``'s arguments, nested ones included, in order, once each."""
    found: List[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n not in found else None)
    return found


def feature_args(node: fx.Node) -> Iterator[fx.Node]:
    return (n for n in node_args(node) if is_feature_map(n))


def is_per_channel(node: Any, channel_count: int) -> bool:
    """A tensor that broadcasts over space and matches ``channel_count`` channels (``[N, C, 1, 1]``, ``[C, 1, 1]``)."""
    value = value_of(node)
    if not isinstance(value, torch.Tensor) or value.ndim not in (3, 4):
        return False
    return int(value.shape[-3]) == channel_count and tuple(value.shape[-2:]) == (1, 1)


def broadcasts_to_both(value: Any) -> bool:
    """A number, or a tensor with one channel and 1x1 space: applies to both branches unchanged."""
    if isinstance(value, fx.Node):
        value = value_of(value)
    if not isinstance(value, torch.Tensor):
        return isinstance(value, (int, float, bool))
    return value.ndim == 0 or (value.ndim <= 4 and all(int(s) == 1 for s in value.shape[-3:]))


@dataclass(frozen=True)
class ConvFacts:
    """What the planner and the convolution rules read of a 2-d convolution, module or function."""

    in_channels: int
    out_channels: int
    groups: int
    kernel_size: Tuple[int, int]
    stride: Any
    padding: Any
    dilation: Any


CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def bound_arguments(signature: inspect.Signature, node: fx.Node) -> Optional[Dict[str, Any]]:
    """A call node's arguments bound to ``signature`` by name, defaults filled in; None if they do not bind."""
    try:
        bound = signature.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def call_args(node: fx.Node, names: Sequence[str], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """A function call's arguments by name, positional or keyword, defaults filled in."""
    found = dict(defaults)
    found.update(zip(names, node.args))
    found.update(node.kwargs)
    return found


def conv_facts(node: fx.Node, modules: Dict[str, nn.Module]) -> ConvFacts:
    """The facts of a ``call_module`` convolution (its attributes) or an ``F.conv2d`` call (its
    arguments, the weight's shape from ``meta["val"]``)."""
    if node.op == "call_module":
        conv = modules[node.target]
        return ConvFacts(conv.in_channels, conv.out_channels, conv.groups, tuple(conv.kernel_size),
                         conv.stride, conv.padding, conv.dilation)
    args = call_args(node, CONV_ARGS, CONV_DEFAULTS)
    out_channels, in_per_group, *kernel = value_of(args["weight"]).shape
    groups = int(args["groups"])
    return ConvFacts(int(in_per_group) * groups, int(out_channels), groups, tuple(int(k) for k in kernel),
                     args["stride"], args["padding"], args["dilation"])


def conv_name(node: fx.Node) -> str:
    """What schedules match and notes quote for a convolution node: a module call's qualified name;
    for a function call the module whose forward made it (from the trace), else the node's name."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        key, value = next(reversed(stack.items()))
        return (value[0] if isinstance(value, tuple) else key) or node.name
    return node.name
