"""Rewrite stage: emit the octave GraphModule, node by node, through each op's rule."""
from __future__ import annotations

from typing import List, Tuple

from torch import fx, nn

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
    result = fx.GraphModule(ctx.modules, ctx.graph, module.__class__.__name__)
    for sub in result.modules():
        if type(sub) is nn.Module or sub is result:  # containers made for the names
            sub.training = module.training
    return result, ctx.notes
