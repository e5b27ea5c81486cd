"""Rewrite stage: emit the octave GraphModule, node by node, through each op's rule."""
from __future__ import annotations

import operator
from typing import List, Set, Tuple

from torch import fx, nn

from .. import ops
from ..errors import ConversionError, InternalError
from ..notes import Note
from ..plan.planner import Plan
from ..rules import find_rule
from ..rules.registry import BOUNDARY
from .context import RewriteContext


def rewrite(module: fx.GraphModule, plan: Plan) -> Tuple[fx.GraphModule, List[Note]]:
    """A new GraphModule computing ``module`` with the plan's octave tensors, and the notes made on the way.

    Submodules keep their qualified names; weights are sliced from ``module``'s (which
    the result does not share with anything the caller passed in, if ``module`` was a copy).
    """
    ctx = RewriteContext(module, plan)
    for node in module.graph.nodes:
        rule = None if plan.categories.get(node, BOUNDARY) == BOUNDARY else find_rule(node, ctx.old_modules)
        try:
            if rule is None:
                ctx.copy(node)
            else:
                rule.rewrite(node, ctx)
        except ConversionError:
            raise
        except Exception as error:
            raise InternalError(f"rewriting failed ({type(error).__name__}: {error})", where=node.name) from error
    _drop_unused_sizes(ctx.graph)
    result = fx.GraphModule(ctx.modules, ctx.graph, module.__class__.__name__)
    for sub in result.modules():
        if type(sub) is nn.Module or sub is result:  # containers made for the names
            sub.training = module.training
    return result, ctx.notes


SIZE_ARITHMETIC = (operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub)


def _drop_unused_sizes(graph: fx.Graph) -> None:
    """Remove size queries of octave tensors, and integer arithmetic on them, that nothing reads any more
    (the sizes a channel shuffle was reshaped with, once it is one channel selection)."""
    sizes: Set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "call_function" and (node.target is ops.size or node.target in SIZE_ARITHMETIC and all(
                arg in sizes for arg in node.all_input_nodes)):
            sizes.add(node)
    for node in reversed(list(graph.nodes)):
        if node in sizes and not node.users:
            graph.erase_node(node)
