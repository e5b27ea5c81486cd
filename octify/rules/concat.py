"""Channel concat of octave (and plain) tensors: highs together, lows together."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

import torch
from torch import fx, nn

from .. import ops
from ..capture.facts import feature_shape, spatial
from .registry import CAT, Rule, register, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext


def parts_and_dim(node: fx.Node):
    """A concat node's list of parts (repeats included, in order) and its dim."""
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return parts, dim


def check_concat(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    parts, dim = parts_and_dim(node)
    if feature_shape(node) is None or dim not in (1, -3):
        return "only channel concats (dim=1) of feature maps have an octave rule"
    if not isinstance(parts, (list, tuple)) or not all(feature_shape(p) is not None for p in parts):
        return "concat of values that are not all feature maps"
    if len({spatial(p) for p in parts}) != 1:
        return "concat of feature maps of different sizes"
    return None


@when_octave
def rewrite_concat(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    parts, _ = parts_and_dim(node)
    new_parts = [ctx.value(p, ctx.plan.layout(p), node) for p in parts]
    ctx.emit(node, "call_function", ops.cat, (new_parts,), {"dim": 1}, split)


register(Rule(CAT, rewrite_concat, check_concat), torch.cat, torch.concat, torch.concatenate)
