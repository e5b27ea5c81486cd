"""Checks that a converted module is called like the original and returns the same structure and shapes."""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch
from torch import fx
from torch.utils._pytree import tree_flatten

from .capture import propagate_shapes
from .errors import InternalError


def output_signature(module: fx.GraphModule) -> Tuple[Any, List[Any]]:
    """The output's structure with each tensor replaced by its shape, from the nodes' ``meta["val"]``."""
    output = next(n for n in reversed(module.graph.nodes) if n.op == "output")
    leaves, spec = tree_flatten(fx.node.map_arg(output.args[0], lambda n: n.meta.get("val")))
    return spec, [tuple(v.shape) if isinstance(v, torch.Tensor) else v for v in leaves]


def check_same_outputs(original: fx.GraphModule, converted: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> None:
    """Record shapes on ``converted``; InternalError unless it returns what ``original`` returned.

    ``original`` must already carry ``meta["val"]`` (the capture stage records it).
    """
    try:
        propagate_shapes(converted, inputs)
    except Exception as error:
        raise InternalError(f"the converted module fails on the example input ({type(error).__name__}: "
                            f"{error})") from error
    expected, produced = output_signature(original), output_signature(converted)
    if produced != expected:
        raise InternalError(f"the converted module returns {produced[1]} instead of {expected[1]}")
