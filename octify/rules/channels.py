"""Channel bookkeeping keeps the octave form: split, chunk, slice, narrow and channel shuffle.

A chain of steps (``view``, ``transpose``, ``chunk``, ``x[:, a:b]``...) from one feature map, the
*source*, to a feature map, the *output*, is kept when it provably only picks the source's
channels: the plan runs the chain on a synthetic tensor that numbers the source's elements
(shapes only, never the model's values) and reads which source channel each output channel
is. The output's split is then the source's split at those channels; on an octave source the
output is one :class:`OctSelect` of it, and the steps in between whose values are not
feature maps (a shuffle's 5-d views, a chunk's tuple) are not emitted at all.

A part whose channels are all high is a plain tensor made of the high branch (no resampling);
a part whose channels are all low is a plain tensor too, its low branch up-sampled (a merge).
"""
from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from torch import fx, nn

from ..capture.facts import feature_shape, is_feature_map, value_of
from ..layers.select import OctSelect
from ..notes import Note
from .registry import CHANNELS, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

METHODS = ("view", "reshape", "transpose", "swapaxes", "permute", "movedim", "contiguous", "flatten", "unflatten",
           "unsqueeze", "squeeze", "chunk", "split", "narrow")
FUNCTIONS = (torch.reshape, torch.transpose, torch.swapaxes, torch.permute, torch.movedim, torch.flatten,
             torch.unflatten, torch.unsqueeze, torch.squeeze, torch.chunk, torch.split, torch.narrow, operator.getitem)
MAX_STEPS = 16
Selection = Tuple[fx.Node, Tuple[int, ...]]


def _is_step(node: object) -> bool:
    if not isinstance(node, fx.Node) or not node.args:
        return False
    return (node.op == "call_method" and node.target in METHODS) or (
        node.op == "call_function" and node.target in FUNCTIONS)


def _chain(node: fx.Node) -> Optional[Tuple[fx.Node, List[fx.Node]]]:
    """The source feature map and the steps from it to ``node`` (in order), or None."""
    steps = [node]
    current = node.args[0]
    while _is_step(current) and not is_feature_map(current) and len(steps) < MAX_STEPS:
        steps.append(current)
        current = current.args[0]
    if not is_feature_map(current):
        return None
    return current, steps[::-1]


def select_channels(node: fx.Node) -> Optional[Selection]:
    """``(source, index)`` when feature map ``node`` is channels ``index`` of feature map ``source``, else None."""
    if not _is_step(node) or not is_feature_map(node):
        return None
    chain = _chain(node)
    if chain is None:
        return None
    source, steps = chain
    shape = feature_shape(source)
    numbered = torch.arange(math.prod(shape), dtype=torch.int64).reshape(tuple(shape))
    values: Dict[fx.Node, object] = {source: numbered}
    try:
        for step in steps:
            args, kwargs = fx.node.map_arg((step.args, step.kwargs),
                                           lambda n: values[n] if n in values else value_of(n))
            values[step] = (getattr(args[0], step.target)(*args[1:], **kwargs) if step.op == "call_method"
                            else step.target(*args, **kwargs))
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
    out = values[node]
    if not isinstance(out, torch.Tensor) or out.shape != feature_shape(node) or out.shape[1] == 0 or (
            out.shape[0] != shape[0] or out.shape[2:] != shape[2:]):
        return None
    index = out[0, :, 0, 0] // (shape[2] * shape[3])
    if not bool(((index >= 0) & (index < shape[1])).all()) or not torch.equal(out, numbered[:, index]):
        return None
    return source, tuple(int(i) for i in index)


def _source(node: fx.Node) -> fx.Node:
    return _chain(node)[0]


def check_channels(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if is_feature_map(node):
        return None if select_channels(node) else "it does more than pick channels of one feature map"
    if _chain(node) is None or not node.users or not all(
            _is_step(user) and not check_channels(user, modules) for user in node.users):
        return "its result is not a feature map, nor a step of a channel split, slice or shuffle"
    return None


def rewrite_channels(node: fx.Node, ctx: "RewriteContext") -> None:
    source = _source(node)
    split = ctx.rep.get(source)
    if split is None:
        ctx.copy(node)
        return
    if not is_feature_map(node):
        return  # a step in between: each output picks its channels from the source directly
    _, index = select_channels(node)
    layer = OctSelect(split, index)
    name = ctx.add_module(f"select_{node.name}", layer)
    out = layer.out_split
    ctx.emit(node, "call_module", name, (ctx.env[source],), {}, out if out.n_low and out.n_high else None)
    if not out.n_high:
        ctx.notes.append(Note(name, "merge", f"the channels {node.name} picks from {source.name} are all low: "
                                             "up-sampled to a plain tensor"))


register(Rule(CHANNELS, rewrite_channels, check_channels, select_channels),
         *(("method", name) for name in METHODS), *FUNCTIONS)
