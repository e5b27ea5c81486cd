"""Input guards for modules traced with fixed sizes: another input size is refused, not silently wrong."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import fx

from .. import ops


def guard_input_shapes(module: fx.GraphModule, example_inputs: Sequence[torch.Tensor],
                       fixed_dims: Sequence[Tuple[int, ...]]) -> None:
    """Route each tensor input through :func:`octify.ops.fixed_shape` (its rank and its ``fixed_dims``)."""
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    for node, example, dims in zip(placeholders, example_inputs, fixed_dims):
        if not isinstance(example, torch.Tensor):
            continue
        users = list(node.users)
        with module.graph.inserting_after(placeholders[-1]):
            guarded = module.graph.call_function(ops.fixed_shape, (node, tuple(example.shape), tuple(dims)))
        guarded.meta = dict(node.meta)
        for user in users:
            user.replace_input_with(node, guarded)
    module.recompile()
